# Builds the Node addon with node-gyp (run by `npm install`). The source lists live in
# native/sources.gypi, which CMakeLists.txt reads too, so the two builds cannot drift.
# Each instruction-set variant is its own static library, so only its files get -mavx2 / -mavx512f
# (on other CPUs they compile to nothing): the addon runs on any x86-64 and picks a variant from CPUID
# at run time, never -march=native. The CUDA backend is built by CMake only (`npm run build:cuda`); this build links
# native/cuda/cuda_stub.cpp, whose backend reports itself unavailable, so `npm install` needs no CUDA toolkit.
{
  "includes": ["native/sources.gypi"],
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-O3", "-fexceptions", "-fPIC", "-Wall", "-Wno-unused-function"],
    "include_dirs": ["native"],
    "defines": ["NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "conditions": [
      ["target_arch=='x64'", {"defines": ["ADAINFER_X86=1"]}]
    ]
  },
  "targets": [
    {
      "target_name": "adainfer_avx2",
      "type": "static_library",
      "sources": ["<@(avx2_sources)"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx2", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "adainfer_avx512",
      "type": "static_library",
      "sources": ["<@(avx512_sources)"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "adainfer_avx512_vnni",
      "type": "static_library",
      "sources": ["<@(avx512_vnni_sources)"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx512bf16", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "adainfer",
      "sources": ["<@(core_sources)", "<@(cuda_stub_sources)", "<@(addon_sources)"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
        "adainfer_avx2",
        "adainfer_avx512",
        "adainfer_avx512_vnni"
      ],
      "libraries": ["-lpthread"]
    }
  ]
}
