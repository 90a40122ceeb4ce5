# Builds keyd's native SIGN path as build/Release/keyd_native.node (docs/keyd.md, "Native SIGN path").
# Compiled against Node's own OpenSSL headers and resolved against the OpenSSL symbols Node exports:
# it must not link libcrypto/libssl (keyd/bridge/check-no-libcrypto.mjs verifies that after the build). No
# --no-undefined: an addon's node-api and OpenSSL symbols come from the node binary at load time.
{
  'targets': [
    {
      'target_name': 'keyd_native',
      'sources': ['addon.c', 'frame.c', 'chain.c'],
      'cflags': ['-std=gnu11', '-Wall', '-Wextra', '-Werror', '-fvisibility=hidden', '-O2', '-pthread'],
      'cflags!': ['-Wno-unused-parameter'],
      'defines': ['NAPI_VERSION=8']
    }
  ]
}
