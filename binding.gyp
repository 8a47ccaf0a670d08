{
  # The sd-handoff addon: only the system calls Node lacks (see native/sd_handoff.cc).
  # Needs no libsystemd and no glibc symbol newer than 2.28 (Debian buster, RHEL 8, Ubuntu 18.10), so a build made
  # on a newer distribution loads on older ones: scripts/prebuild.mjs refuses a prebuild needing more, and
  # test/native/prebuild.test.ts checks both. Check: objdump -T build/Release/sd_handoff.node | grep GLIBC_
  # libstdc++ stays dynamic (node itself links it; the addon needs only GLIBCXX_3.4.21 / CXXABI_1.3.9, gcc >= 5):
  # -static-libstdc++ was tried and drags in arc4random (2.36) and _dl_find_object (2.35) through libgcc_eh.
  'targets': [
    {
      'target_name': 'sd_handoff',
      'sources': [
        'native/sd_handoff.cc',
        'native/async.cc',
        'native/common.cc',
      ],
      'include_dirs': [
        "<!(node -p \"require('node-addon-api').include_dir\")",
      ],
      'defines': [
        'NAPI_VERSION=8',
        'NAPI_DISABLE_CPP_EXCEPTIONS',
        'NODE_ADDON_API_DISABLE_DEPRECATED',
        '_GNU_SOURCE',
      ],
      'cflags': ['-Wall', '-Wextra', '-fvisibility=hidden'],
      'cflags_cc!': ['-std=gnu++17', '-std=gnu++1y', '-std=gnu++20'],
      'cflags_cc': ['-std=c++17', '-fno-exceptions', '-fno-rtti'],
      'ldflags': ['-Wl,--as-needed'],
    },
  ],
}
