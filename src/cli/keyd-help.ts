// Every `keyedge keyd …` command with its own usage: `keyedge keyd <command> --help` prints the one
// entry, `keyedge keyd --help` the list. keyd.ts dispatches only the commands named here, so a new
// command cannot ship without its help (test/cli/help.test.ts runs --help on each).
import { KEY_TYPES, USAGES } from '../../keyd/algorithms.js'

/** One command: its arguments after `keyedge keyd <name>`, a one-line summary, then details and options. */
export interface KeydCommandHelp {
  args: string
  summary: string
  /** Paragraphs and option lines, printed after the usage line. */
  body: string
}

const COMMON = `Common options:
  --home DIR            state directory (default $KEYEDGE_HOME or ./.keyedge)
  --socket PATH         keyd socket (default <home>/keyd.sock)
  -h, --help            this help`

const MASTER_KEY = `  --dev                 the development master key (<home>/keyd/master.key), or
  --passphrase-file F   the passphrase keyd was started with (or set KEYEDGE_KEYD_PASSPHRASE)`

export const KEYD_COMMANDS: Record<string, KeydCommandHelp> = {
  serve: {
    args: '[--dev | --passphrase-file F] [options]',
    summary: 'run the key daemon on <home>/keyd.sock (or --socket)',
    body: `Runs keyd until SIGINT/SIGTERM. It logs JSON lines; {"msg":"keyd ready","keyCount":N,…} once it
accepts connections. A Shamir-sealed home ("keyd init") starts sealed: unseal it with "keyd unseal".

Options:
  --dev                 development mode: the master key is a generated 0600 file (not for production)
  --passphrase-file F   unseal the keystore with the passphrase in F (or set KEYEDGE_KEYD_PASSPHRASE)
  --audit MODE          buffered (default: appended within one event-loop turn), fsync (answer only
                        once the entry is on disk), or off (benchmarks only)
  --audit-fail-open     keep signing when the audit log cannot be written (default: refuse until
                        a probe write succeeds again, every 0.5 s)
  --metrics-port N      serve /metrics and /healthz on 127.0.0.1:N (default: off; 0 = any free port)
  --capacity N          signatures per second this keyd is sized for, reported as
                        keyd_capacity_signatures_per_second (default: ECDSA P-256 signing measured for
                        0.1 s at start, with --metrics-port; docs/metrics.md, headroom)
  --no-native-sign      sign in JavaScript only (default: a SIGN that succeeds is answered by keyd's
                        native signing threads, with the file keystore and buffered fail-closed
                        audit; docs/keyd.md, "Native SIGN path"); KEYEDGE_KEYD_NATIVE_SIGN=0 too
  --sign-threads N      native signing threads (default: one per available CPU)
  --proxy-secret-dir D  where keyd keeps the proxy client's secret (proxy.secret, 0600; default
                        <home>/clients): a directory the proxy can read, e.g. the volume it shares with
                        keyd for the socket, so the proxy never needs keyd's home
  --user U[:G]          started as root: prepare the home and socket directories for U, then drop to
                        user U, group G (default U's primary group) before reading any key
  --socket-group G      the group that may connect (the proxy's): socket directory 0750 and socket
                        0660 of group G, proxy.secret 0640 of group G; keyd must be in G (--user adds
                        it). The socket and --proxy-secret-dir must then be outside keyd's home
  --pkcs11-module PATH  keep signing keys in a PKCS#11 token instead of the file store: the module keyd
                        loads, p11-kit-client.so (the real module runs in "p11-kit server"; keyd reaches it
                        through P11_KIT_SERVER_ADDRESS). A module linked to libcrypto is refused.
  --pkcs11-token LABEL  the token's label (with --pkcs11-module)
  --pkcs11-pin-file F   the user PIN in F (or set KEYEDGE_PKCS11_PIN)`
  },
  ping: { args: '', summary: 'check that keyd answers (exit 0: "keyd OK")', body: '' },
  status: { args: '', summary: 'sealed or not, shares received, number of keys (JSON)', body: '' },
  init: {
    args: '--shares N --threshold M',
    summary: 'create a master key split into Shamir shares (before the first "keyd serve")',
    body: `Prints the N shares once; any M of them unseal keyd. Give each to a different person.

Options:
  --shares N            number of shares (default 5)
  --threshold M         shares needed to unseal (default 3)`
  },
  unseal: {
    args: '[--share S]',
    summary: 'give a sealed keyd one share',
    body: `Without --share, reads one line from stdin (typed or piped; never echoed). Repeat with other
holders' shares until keyd answers "keyd unsealed".

Options:
  --share S             the share (ks1-…)`
  },
  'audit verify': {
    args: '--dev | --passphrase-file F',
    summary: 'check the hash-chained audit log offline',
    body: `Reads <home>/keyd/audit.log and audit.head and reports edited, deleted, reordered and truncated
entries. Needs the master key, from which the chain key derives (Shamir-sealed homes: not yet).
Exit 0: "audit log OK"; 1: every problem, one per line.

Options:
${MASTER_KEY}`
  },
  'audit export': {
    args: '[--since T] [--follow] (--dev | --passphrase-file F)',
    summary: 'print verified audit entries as JSON lines, for a log shipper (Fluent Bit, Promtail)',
    body: `Verifies the audit log's chain from its first entry and prints each entry at or after T as one
JSON line: {"type":"audit","seq","line","verified","checkpointed","problems","entry"}. "verified" is
true while the chain is intact from the first entry to this one; "checkpointed" when keyd's MACed
head checkpoint vouches for it (a later truncation would be detected). Then, without --follow, one
{"type":"audit-verification",…} line with the whole log's state; exit 1 if it found a problem.
With --follow it keeps reading entries as keyd appends them, prints a {"type":"audit-checkpoint"}
line each time keyd's checkpoint advances, and stops on SIGINT/SIGTERM.

Options:
  --since T             an ISO 8601 time (2026-01-31, 2026-01-31T12:00:00Z) or an age: 90s, 15m, 2h, 7d
                        (default: every entry)
  --follow              keep printing new entries as they are written
${MASTER_KEY}`
  },
  'backup export': {
    args: '--out FILE (--passphrase-file F | --shares N --threshold M)',
    summary: 'write an encrypted bundle of every key, version and policy',
    body: `Through keyd's admin socket; keyd encrypts, nothing leaves it in the clear.

Options:
  --out FILE            where to write the bundle (atomic, 0600)
  --passphrase-file F   wrap it under a backup passphrase (scrypt; at least 12 characters), or
  --shares N --threshold M
                        wrap it under a fresh random key split into N Shamir shares, M to restore
                        (the shares are printed once, here)`
  },
  'backup restore': {
    args: '--in FILE [--passphrase-file F | --share S …]',
    summary: 'restore a bundle into an empty keyd',
    body: `Every key is re-sealed under this keyd's master key. Refused (RESTORE_NOT_EMPTY) if keyd holds a key.

Options:
  --in FILE             the bundle
  --passphrase-file F   the backup passphrase, or
  --share S             a share (repeat the option), or give the shares on stdin, one a line`
  },
  'key create': {
    args: '--name N --type T [--usage U]',
    summary: 'generate a key inside keyd',
    body: `Options:
  --name N              key name ([a-z0-9][a-z0-9._-]{0,63})
  --type T              ${KEY_TYPES.join(' | ')}
  --usage U             ${USAGES.join(' | ')} (default tls-server)`
  },
  'key list': { args: '', summary: 'name, type, versions, usage, state, origin, created, SHA-256 SPKI fingerprint', body: '' },
  'key show': {
    args: '--name N',
    summary: 'JSON detail of one key, every version (also a destroyed key\'s tombstone)',
    body: `Options:
  --name N              the key`
  },
  'key public': {
    args: '--name N [--version V] [--format pem|jwk] [--out F]',
    summary: 'the public key of a key version',
    body: `Options:
  --name N              the key
  --version V           a version (default 0 = the current one)
  --format F            pem (default) or jwk
  --out F               write it to F instead of stdout`
  },
  'key ref': {
    args: '--name N [--version V] [--out F]',
    summary: 'write the key reference of a keyd key (what the proxy config names as "key")',
    body: `A key reference (-----BEGIN KEYEDGE KEY REFERENCE-----) names the key, its version and type; it
holds no secret (written 0644). It pins the version: after "key rotate", write a new one for the new
certificate. Works for any key: generated, imported or restored.

Options:
  --name N              the key
  --version V           a version (default 0 = the current one; the file names its number)
  --out F               write it to F (atomically) instead of stdout`
  },
  'key rotate': {
    args: '--name N [--grace-seconds S|unlimited]',
    summary: 'make a new current version; older ones keep verifying',
    body: `Older versions may still sign for S seconds after the rotation (then KEY_VERSION_RETIRED); without
--grace-seconds the key's grace stays as it was (unset = no limit).

Options:
  --name N              the key
  --grace-seconds S     seconds older versions keep signing, or "unlimited"`
  },
  'key disable': {
    args: '--name N',
    summary: 'refuse SIGN with the key (KEY_DISABLED); it still verifies',
    body: `Options:
  --name N              the key`
  },
  'key enable': {
    args: '--name N',
    summary: 'let a disabled key sign again',
    body: `Options:
  --name N              the key`
  },
  'key destroy': {
    args: '--name N --yes',
    summary: 'remove every private key of N for good (a tombstone keeps the name)',
    body: `Options:
  --name N              the key
  --yes                 confirm: there is no undo`
  },
  'key import': {
    args: '--name N (--file key.pem | --wrapped BUNDLE) [--usage U]',
    summary: 'bring an existing private key into keyd (marked origin: imported forever)',
    body: `--file reads an unencrypted PKCS#8, PKCS#1 or SEC1 PEM and sends it over keyd's socket; --wrapped
sends a bundle made by "key wrap" that only keyd can open. Then "key ref" writes its key reference
("keyedge import" does both for a certificate and key pair). Shred the PEM afterwards.

Options:
  --name N              key name ([a-z0-9][a-z0-9._-]{0,63})
  --file key.pem        the private key PEM
  --wrapped BUNDLE      a bring-your-own-key bundle
  --usage U             ${USAGES.join(' | ')} (default tls-server)`
  },
  'key wrapping-key': {
    args: '[--out F]',
    summary: 'keyd\'s RSA-OAEP (SHA-256) wrapping public key, PEM (bring-your-own-key, step 1)',
    body: `Options:
  --out F               write it to F instead of stdout`
  },
  'key wrap': {
    args: '--wrapping-key pub.pem --in key.pem --out BUNDLE',
    summary: 'operator side, offline: wrap a private key for "key import --wrapped"',
    body: `AES-256 key under RSA-OAEP, private key under RFC 5649 AES key wrap with padding;
base64(RSA ciphertext || KWP). Needs no keyd.

Options:
  --wrapping-key F      keyd's wrapping public key (from "key wrapping-key")
  --in key.pem          the private key PEM
  --out BUNDLE          where to write the bundle (0600)`
  },
  'key attest': {
    args: '--name N [--version V] [--out F]',
    summary: 'an attestation statement signed by keyd\'s Ed25519 attestation key',
    body: `Options:
  --name N              the key
  --version V           a version (default 0 = the current one)
  --out F               write it to F instead of stdout`
  },
  'key attestation-key': {
    args: '[--out F]',
    summary: 'keyd\'s attestation public key, PEM',
    body: `Options:
  --out F               write it to F instead of stdout`
  },
  'key verify-attestation': {
    args: '--in F [--attestation-key pem]',
    summary: 'check a statement offline, or against the running keyd\'s attestation key',
    body: `Options:
  --in F                the statement (from "key attest")
  --attestation-key F   the attestation public key; without it, asks the running keyd`
  }
}

/** Groups whose `--help` lists their commands: `keyedge keyd key --help`. */
const GROUPS = ['key', 'audit', 'backup']

function commandLine (name: string, h: KeydCommandHelp): string {
  return `keyedge keyd ${name}${h.args === '' ? '' : ` ${h.args}`}`
}

/** The usage of one command, of a group, or undefined when `cmd` is neither. */
export function keydCommandUsage (cmd: string): string | undefined {
  const h = KEYD_COMMANDS[cmd]
  if (h !== undefined) return `Usage: ${commandLine(cmd, h)}\n\n${h.summary}\n${h.body === '' ? '' : `\n${h.body}\n`}\n${COMMON}\n`
  if (!GROUPS.includes(cmd)) return undefined
  const members = Object.entries(KEYD_COMMANDS).filter(([n]) => n.startsWith(`${cmd} `))
  return `Usage: keyedge keyd ${cmd} <command> [options]\n\n${members.map(([n, m]) => `  ${commandLine(n, m)}\n      ${m.summary}`).join('\n')}\n\n` +
    `Run "keyedge keyd ${cmd} <command> --help" for one command's options.\n\n${COMMON}\n`
}

/** `keyedge keyd --help`: every command, one line each. */
export function keydUsage (): string {
  const width = Math.max(...Object.keys(KEYD_COMMANDS).map(n => n.length)) + 2
  const lines = Object.entries(KEYD_COMMANDS).map(([n, h]) => `  ${n.padEnd(width)}${h.summary}`)
  return `Usage: keyedge keyd <command> [options]\n\nCommands:\n${lines.join('\n')}\n\n` +
    'Run "keyedge keyd <command> --help" for a command\'s options (from a checkout: npx keyedge keyd …).\n\n' +
    `${COMMON}\n`
}
