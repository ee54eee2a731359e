// 2-D convolutions (forward, input gradient, kernel gradient) and matrix products on oneDNN, as
// XLA FFI handlers.
//
// Why by hand: XLA:CPU runs convolutions on Eigen, XNNPACK or YNNPACK, whose kernel gradients are
// slow and which compute bfloat16 convolutions in float32; oneDNN (PyTorch's CPU convolution
// library) has direct kernels for all three passes and uses AVX512_BF16. No maintained package
// exposes oneDNN to JAX. Built and loaded by cifar100_flax/cpu/onednn.py.
//
// Layouts are JAX's: images NHWC, kernels HWIO (grouped: feature_group_count's). float32 and
// bfloat16 buffers; a bfloat16 pass accumulates in float32 inside oneDNN. Primitives are created
// once per shape and cached. The matrix product is here because XLA:CPU's dot has no AMX kernels
// (oneDNN's bfloat16 matmul is about 5x faster on an AMX CPU; docs/speed.md).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum class Pass { kForward, kInputGradient, kKernelGradient };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// XLA runs independent custom calls at once (a backward pass's two gradients, test-time views).
// Each call uses all cores, so they run one at a time; while they took oneDNN's own scratchpad
// (below), concurrent calls also overwrote each other's intermediates.
std::mutex& ExecutionMutex() {
  static std::mutex mutex;
  return mutex;
}

// Every primitive takes its scratchpad from the caller. oneDNN's own ("library") scratchpad is
// thread-local and sized when a primitive is created: XLA creates a primitive on one of its
// threads and runs it on any, where that scratchpad may be smaller or absent (on AVX2 CPUs the
// depthwise kernel gradient of maps smaller than the kernel, oneDNN's gemm implementation,
// wrote past it and crashed the process).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attributes;
  attributes.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attributes;
}

memory::data_type DataType(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::F32: return memory::data_type::f32;
    case ffi::DataType::BF16: return memory::data_type::bf16;
    default: return memory::data_type::undef;
  }
}

// oneDNN's logical dims are NCHW / OIHW; the format tag says the memory is NHWC / HWIO.
memory::desc ImageDesc(ffi::AnyBuffer::Dimensions d, memory::data_type type) {
  return memory::desc({d[0], d[3], d[1], d[2]}, type, memory::format_tag::nhwc);
}

// A grouped kernel's HWIO buffer holds (H, W, I / groups, groups, O / groups): oneDNN's hwigo.
memory::desc KernelDesc(ffi::AnyBuffer::Dimensions d, int64_t groups, memory::data_type type,
                        bool any = false) {
  if (groups == 1) {
    return memory::desc({d[3], d[2], d[0], d[1]}, type,
                        any ? memory::format_tag::any : memory::format_tag::hwio);
  }
  return memory::desc({groups, d[3] / groups, d[2], d[0], d[1]}, type,
                      any ? memory::format_tag::any : memory::format_tag::hwigo);
}

// A convolution's primitives for one geometry and one pass.
struct Conv {
  dnnl::primitive primitive;
  memory::desc kernel;  // the layout the primitive wants its kernel (or kernel gradient) in
  memory::desc scratchpad;
};

struct Geometry {
  ffi::AnyBuffer::Dimensions image, kernel, output;
  memory::data_type image_type, kernel_type, output_type;
  memory::dims strides, padding_low, padding_high;
  int64_t groups;

  std::string Key(Pass pass) const {
    std::ostringstream key;
    key << static_cast<int>(pass) << 'g' << groups;
    for (auto dims : {image, kernel, output}) {
      for (int64_t d : dims) key << ',' << d;
    }
    for (const auto& dims : {strides, padding_low, padding_high}) {
      for (int64_t d : dims) key << ';' << d;
    }
    key << '|' << static_cast<int>(image_type) << static_cast<int>(kernel_type)
        << static_cast<int>(output_type);
    return key.str();
  }

  // The forward pass's primitive; the backward ones take it as a hint. A bfloat16 kernel gradient
  // may be float32, but the forward pass has the image's type throughout.
  dnnl::convolution_forward::primitive_desc Forward() const {
#if DNNL_VERSION_MAJOR >= 3
    return dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        ImageDesc(image, image_type), KernelDesc(kernel, groups, image_type, /*any=*/true),
        ImageDesc(output, output_type), strides, padding_low, padding_high, UserScratchpad());
#else
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        ImageDesc(image, image_type),
        KernelDesc(kernel, groups, image_type, /*any=*/true),
        ImageDesc(output, output_type), strides, padding_low, padding_high);
    return dnnl::convolution_forward::primitive_desc(desc, UserScratchpad(), Engine());
#endif
  }

  // A backward pass's primitive; kernel_arg names its kernel (or kernel gradient) argument.
  template <typename Backward>
  Conv CreateBackward(int kernel_arg) const {
#if DNNL_VERSION_MAJOR >= 3
    typename Backward::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, ImageDesc(image, image_type),
        KernelDesc(kernel, groups, kernel_type, /*any=*/true), ImageDesc(output, output_type),
        strides, padding_low, padding_high, Forward(), UserScratchpad());
#else
    typename Backward::desc desc(
        dnnl::algorithm::convolution_direct, ImageDesc(image, image_type),
        KernelDesc(kernel, groups, kernel_type, /*any=*/true), ImageDesc(output, output_type),
        strides, padding_low, padding_high);
    typename Backward::primitive_desc pd(desc, UserScratchpad(), Engine(), Forward());
#endif
    return {Backward(pd), pd.query_md(dnnl::query::exec_arg_md, kernel_arg),
            pd.scratchpad_desc()};
  }

  Conv Create(Pass pass) const {
    switch (pass) {
      case Pass::kForward: {
        auto forward = Forward();
        return {dnnl::convolution_forward(forward), forward.weights_desc(),
                forward.scratchpad_desc()};
      }
      case Pass::kInputGradient:
        return CreateBackward<dnnl::convolution_backward_data>(DNNL_ARG_WEIGHTS);
      case Pass::kKernelGradient:
        return CreateBackward<dnnl::convolution_backward_weights>(DNNL_ARG_DIFF_WEIGHTS);
    }
    return {};
  }
};

// The primitive for `key`, made by `create()` on first use (one cache per primitive type).
template <typename Primitive, typename Create>
const Primitive& Cached(const std::string& key, Create create) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Primitive>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[key];
  if (!entry) entry = std::make_unique<Primitive>(create());
  return *entry;
}

ffi::Error Run(Pass pass, ffi::AnyBuffer image, ffi::AnyBuffer kernel, ffi::AnyBuffer output,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
               ffi::Span<const int64_t> padding_high, int64_t groups) {
  Geometry geometry{image.dimensions(), kernel.dimensions(), output.dimensions(),
                    DataType(image.element_type()), DataType(kernel.element_type()),
                    DataType(output.element_type()),
                    memory::dims(strides.begin(), strides.end()),
                    memory::dims(padding_low.begin(), padding_low.end()),
                    memory::dims(padding_high.begin(), padding_high.end()), groups};
  for (auto type : {geometry.image_type, geometry.kernel_type, geometry.output_type}) {
    if (type == memory::data_type::undef) {
      return ffi::Error::InvalidArgument("onednn_conv: buffers must be float32 or bfloat16");
    }
  }
  try {
    const Conv& conv = Cached<Conv>(geometry.Key(pass), [&] { return geometry.Create(pass); });
    dnnl::engine& engine = Engine();
    std::lock_guard<std::mutex> serialised(ExecutionMutex());
    dnnl::stream stream(engine);
    memory image_memory(ImageDesc(geometry.image, geometry.image_type), engine,
                        image.untyped_data());
    memory output_memory(ImageDesc(geometry.output, geometry.output_type), engine,
                         output.untyped_data());
    memory user_kernel(KernelDesc(geometry.kernel, groups, geometry.kernel_type), engine,
                       kernel.untyped_data());
    memory scratchpad(conv.scratchpad, engine);
    // The kernel is small: reorder it to (or its gradient from) the primitive's layout each call.
    memory kernel_memory = user_kernel;
    if (conv.kernel != user_kernel.get_desc()) kernel_memory = memory(conv.kernel, engine);
    if (pass == Pass::kKernelGradient) {
      conv.primitive.execute(stream, {{DNNL_ARG_SRC, image_memory},
                                      {DNNL_ARG_DIFF_DST, output_memory},
                                      {DNNL_ARG_DIFF_WEIGHTS, kernel_memory},
                                      {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (kernel_memory != user_kernel) {
        dnnl::reorder(kernel_memory, user_kernel).execute(stream, kernel_memory, user_kernel);
      }
    } else {
      if (kernel_memory != user_kernel) {
        dnnl::reorder(user_kernel, kernel_memory).execute(stream, user_kernel, kernel_memory);
      }
      if (pass == Pass::kForward) {
        conv.primitive.execute(stream, {{DNNL_ARG_SRC, image_memory},
                                        {DNNL_ARG_WEIGHTS, kernel_memory},
                                        {DNNL_ARG_DST, output_memory},
                                        {DNNL_ARG_SCRATCHPAD, scratchpad}});
      } else {
        conv.primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, image_memory},
                                        {DNNL_ARG_WEIGHTS, kernel_memory},
                                        {DNNL_ARG_DIFF_DST, output_memory},
                                        {DNNL_ARG_SCRATCHPAD, scratchpad}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

// Each handler's buffers, in order: the image (or its gradient), the kernel (or its gradient),
// the output (or its gradient); the one it computes is its result.
ffi::Error Forward(ffi::AnyBuffer image, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> output,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                   ffi::Span<const int64_t> padding_high, int64_t groups) {
  return Run(Pass::kForward, image, kernel, *output, strides, padding_low, padding_high, groups);
}

ffi::Error InputGradient(ffi::AnyBuffer kernel, ffi::AnyBuffer output_gradient,
                         ffi::Result<ffi::AnyBuffer> image_gradient,
                         ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                         ffi::Span<const int64_t> padding_high, int64_t groups) {
  return Run(Pass::kInputGradient, *image_gradient, kernel, output_gradient, strides,
             padding_low, padding_high, groups);
}

ffi::Error KernelGradient(ffi::AnyBuffer image, ffi::AnyBuffer output_gradient,
                          ffi::Result<ffi::AnyBuffer> kernel_gradient,
                          ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                          ffi::Span<const int64_t> padding_high, int64_t groups) {
  return Run(Pass::kKernelGradient, image, *kernel_gradient, output_gradient, strides,
             padding_low, padding_high, groups);
}

// A row-major (rows, cols) buffer as a matrix, or as its transpose.
memory::desc MatrixDesc(ffi::AnyBuffer::Dimensions d, memory::data_type type, bool transposed) {
  if (transposed) return memory::desc({d[1], d[0]}, type, memory::dims{1, d[1]});
  return memory::desc({d[0], d[1]}, type, memory::dims{d[1], 1});
}

struct Matmul {
  dnnl::matmul primitive;
  memory::desc scratchpad;
};

Matmul CreateMatmul(const memory::desc& a, const memory::desc& b, const memory::desc& out) {
#if DNNL_VERSION_MAJOR >= 3
  dnnl::matmul::primitive_desc pd(Engine(), a, b, out, UserScratchpad());
#else
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, out), UserScratchpad(), Engine());
#endif
  return {dnnl::matmul(pd), pd.scratchpad_desc()};
}

// out = op(a) @ op(b), op transposing where asked; out may be float32 for bfloat16 operands.
ffi::Error MatrixProduct(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                         bool transpose_a, bool transpose_b) {
  auto a_type = DataType(a.element_type()), b_type = DataType(b.element_type());
  auto out_type = DataType(out->element_type());
  if (a_type == memory::data_type::undef || b_type == memory::data_type::undef ||
      out_type == memory::data_type::undef) {
    return ffi::Error::InvalidArgument("onednn_matmul: buffers must be float32 or bfloat16");
  }
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2 || out->dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("onednn_matmul: operands must be matrices");
  }
  memory::desc a_desc = MatrixDesc(a.dimensions(), a_type, transpose_a);
  memory::desc b_desc = MatrixDesc(b.dimensions(), b_type, transpose_b);
  memory::desc out_desc = MatrixDesc(out->dimensions(), out_type, false);
  std::ostringstream key;
  key << transpose_a << transpose_b << '|' << static_cast<int>(a_type) << static_cast<int>(b_type)
      << static_cast<int>(out_type);
  for (auto dims : {a.dimensions(), b.dimensions(), out->dimensions()}) {
    for (int64_t d : dims) key << ',' << d;
  }
  try {
    const Matmul& matmul = Cached<Matmul>(
        key.str(), [&] { return CreateMatmul(a_desc, b_desc, out_desc); });
    dnnl::engine& engine = Engine();
    std::lock_guard<std::mutex> serialised(ExecutionMutex());
    dnnl::stream stream(engine);
    memory a_memory(a_desc, engine, a.untyped_data()), b_memory(b_desc, engine, b.untyped_data());
    memory out_memory(out_desc, engine, out->untyped_data());
    memory scratchpad(matmul.scratchpad, engine);
    matmul.primitive.execute(stream, {{DNNL_ARG_SRC, a_memory}, {DNNL_ARG_WEIGHTS, b_memory},
                                      {DNNL_ARG_DST, out_memory},
                                      {DNNL_ARG_SCRATCHPAD, scratchpad}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_matmul: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

// 1 if oneDNN has bfloat16 kernels for this CPU (all three convolution passes and the matmul),
// 0 if not: it has none without AVX-512 (or AVX2-VNNI-2), and creating a primitive then throws.
extern "C" int OnednnTakesBfloat16() {
  const auto bf16 = memory::data_type::bf16;
  const std::vector<int64_t> image{2, 6, 6, 16}, kernel{3, 3, 16, 16};
  Geometry geometry{image, kernel, image, bf16, bf16, bf16, {1, 1}, {1, 1}, {1, 1}, 1};
  try {
    geometry.Create(Pass::kForward);
    geometry.Create(Pass::kInputGradient);
    geometry.kernel_type = memory::data_type::f32;  // as KernelGradient asks for it
    geometry.Create(Pass::kKernelGradient);
    const std::vector<int64_t> square{16, 16};
    memory::desc matrix = MatrixDesc(square, bf16, false);
    CreateMatmul(matrix, matrix, MatrixDesc(square, memory::data_type::f32, false));
    CreateMatmul(matrix, matrix, matrix);
  } catch (const dnnl::error&) {
    return 0;
  }
  return 1;
}

#define CONV_ATTRS                                   \
  .Attr<ffi::Span<const int64_t>>("strides")         \
      .Attr<ffi::Span<const int64_t>>("padding_low") \
      .Attr<ffi::Span<const int64_t>>("padding_high") \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvInputGradient, InputGradient,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvKernelGradient, KernelGradient,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CONV_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnMatmul, MatrixProduct,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
