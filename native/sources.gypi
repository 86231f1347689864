{
  "variables": {
    "core_sources": [
      "native/core/ggml_types.cpp",
      "native/core/cpu_features.cpp",
      "native/core/thread_pool.cpp",
      "native/core/kernel_select.cpp",
      "native/core/rope.cpp",
      "native/core/mapped_file.cpp",
      "native/core/quantize.cpp",
      "native/cpu/generic/kernels_generic.cpp",
      "native/blocks/block_common.cpp",
      "native/blocks/weight_packing.cpp",
      "native/blocks/cpu_blocks.cpp",
      "native/blocks/architecture.cpp",
      "native/blocks/llama_blocks.cpp",
      "native/blocks/opt_blocks.cpp",
      "native/architectures/llama.cpp",
      "native/architectures/opt.cpp",
      "native/architectures/qwen2.cpp",
      "native/architectures/qwen3.cpp"
    ],
    "avx2_sources": [
      "native/cpu/x86/kernels_avx2.cpp"
    ],
    "avx512_sources": [
      "native/cpu/x86/kernels_avx512.cpp"
    ],
    "avx512_vnni_sources": [
      "native/cpu/x86/kernels_avx512_vnni.cpp"
    ],
    "cuda_stub_sources": [
      "native/cuda/cuda_stub.cpp"
    ],
    "cuda_sources": [
      "native/cuda/cuda_blocks.cu",
      "native/cuda/cuda_kernels.cu"
    ],
    "addon_sources": [
      "native/addon/addon.cpp",
      "native/addon/js_model.cpp",
      "native/addon/js_context.cpp",
      "native/addon/js_quant.cpp",
      "native/addon/js_probe.cpp"
    ],
    "native_test_sources": [
      "test/native/test_main.cpp",
      "test/native/test_kernels.cpp",
      "test/native/test_quant.cpp",
      "test/native/test_thread_pool.cpp"
    ],
    "cuda_test_sources": [
      "test/cuda/test_cuda.cpp",
      "test/fuzz/native/gguf_table.cpp"
    ],
    "native_bench_sources": [
      "bench/native/matmul_bench.cpp"
    ],
    "fuzz_sources": [
      "test/fuzz/native/gguf_table.cpp",
      "test/fuzz/native/fuzz_loader.cpp"
    ],
    "loader_test_sources": [
      "test/native/test_main.cpp",
      "test/fuzz/native/loader_tests.cpp"
    ]
  }
}
