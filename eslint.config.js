// ESLint for the whole tree (`npm run lint`): typescript-eslint with type information, import cycles
// forbidden, and the boundaries between the proxy (src), the key daemon (keyd) and shared code (lib).
//
// Cycles and boundaries are checked by eslint-plugin-import-x rather than a second tool
// (dependency-cruiser): one command, one configuration, findings with file and line in the same
// report and in editors, and the tree is small enough that `no-cycle` costs seconds.
import js from '@eslint/js'
import { defineConfig } from 'eslint/config'
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript'
import { importX } from 'eslint-plugin-import-x'
import globals from 'globals'
import tseslint from 'typescript-eslint'

const root = import.meta.dirname

export default defineConfig(
  { ignores: ['dist/**', 'node_modules/**', '.cache/**', '.tap/**', '.keyedge/**', 'keyd/bridge/build/**', 'bench/results/**'] },

  js.configs.recommended,
  { files: ['**/*.js', '**/*.mjs'], languageOptions: { globals: globals.node } },

  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      // tsconfig.json holds the whole tree in one program (the build splits it in two).
      parserOptions: { projectService: true, tsconfigRootDir: root }
    },
    plugins: { 'import-x': importX },
    settings: {
      // Parse imported .ts files (without this, no-cycle sees no edges and passes silently).
      'import-x/extensions': importX.flatConfigs.typescript.settings['import-x/extensions'],
      'import-x/parsers': importX.flatConfigs.typescript.settings['import-x/parsers'],
      'import-x/external-module-folders': importX.flatConfigs.typescript.settings['import-x/external-module-folders'],
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: `${root}/tsconfig.json` })]
    },
    rules: {
      // Promises: a forgotten await loses an error or races; an async callback where a plain one is
      // expected (event handlers, Array.forEach) drops its rejection.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // keyd answers synchronously when it can and returns a promise only for work off the event loop
      // (MaybeAsync<T> = T | Promise<T>); Promise.all over such a mix is what it means to wait for the
      // async ones, so the rule only insists that something in the array may be a promise.
      '@typescript-eslint/await-thenable': ['error', { allowMixedPromiseArrays: true }],
      // The house style awaits every returned promise, which also keeps try/catch and stack traces right.
      '@typescript-eslint/return-await': ['error', 'always'],
      '@typescript-eslint/prefer-promise-reject-errors': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      // Type-only imports are erased: say so, so that no module is loaded (or cycled through) for a type.
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-import-type-side-effects': 'error',
      // Casts that change nothing hide the ones that do; a switch over a union must name every member.
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      // No "[object Object]" in messages and logs.
      '@typescript-eslint/no-base-to-string': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Errors are `unknown` until narrowed (instanceof, or the errorMessage()/code helpers), never cast.
      '@typescript-eslint/use-unknown-in-catch-callback-variable': 'error',
      'no-restricted-syntax': ['error', {
        selector: 'TSAsExpression > Identifier.expression[name=/^(e|err|error|cause|reason)$/]',
        message: 'narrow a caught error (instanceof, or a helper) instead of casting it'
      }],
      '@typescript-eslint/no-deprecated': 'error',
      eqeqeq: ['error', 'always', { null: 'ignore' }],

      // No import cycles (type-only imports are erased and do not count).
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-self-import': 'error',
      'import-x/no-restricted-paths': ['error', {
        basePath: root,
        zones: [
          {
            target: ['./src', './keyd', './certs', './lib'],
            from: ['./test', './bench'],
            message: 'product code does not depend on tests or benches'
          },
          {
            target: './keyd',
            from: './src',
            message: 'keyd does not depend on the proxy: shared code belongs in lib/'
          },
          {
            target: './lib',
            from: ['./src', './keyd', './certs'],
            message: 'lib/ is shared by the proxy and keyd, so it imports neither'
          }
        ]
      }]
    }
  },

  // The proxy reaches keyd only through its client, its wire protocol and its errors. The `keyedge keyd …`
  // commands are keyd's own entry points, compiled into the one `keyedge` bin, and are exempt by name
  // (a new file here is a decision, not a glob match): keyd.ts builds and runs the daemon (keystore,
  // server, audit log, metrics, backups), keyd-key.ts (key lifecycle, wrapping a key for import),
  // keyd-audit.ts (exports and verifies the audit chain), keyd-backup.ts (moves backup bundles),
  // keyd-help.ts (usage texts naming keyd's key types and usages). The layout of the keyedge home that both sides read is in lib/home.ts.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/cli/keyd.ts', 'src/cli/keyd-key.ts', 'src/cli/keyd-audit.ts', 'src/cli/keyd-backup.ts', 'src/cli/keyd-help.ts'],
    rules: {
      'import-x/no-restricted-paths': ['error', {
        basePath: root,
        zones: [
          { target: ['./src', './keyd', './certs', './lib'], from: ['./test', './bench'], message: 'product code does not depend on tests or benches' },
          {
            target: './src',
            from: './keyd',
            except: ['./client', './protocol', './errors.ts'],
            message: 'the proxy uses keyd only through keyd/client, keyd/protocol and keyd/errors (shared helpers go to lib/)'
          }
        ]
      }]
    }
  },

  // Tests and benches handle parsed JSON freely; the promise rules still apply, except that tap queues
  // `t.test()` subtests itself (its promise is for callers that want to wait), and a subtest callback
  // is async by convention whether or not it awaits.
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', name: 'test', package: '@tapjs/test' }] }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off'
    }
  }
)
