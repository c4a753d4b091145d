// A whole GRU or LSTM layer over a sequence as one TensorFlow op, run by
// oneDNN's RNN primitives on the CPU (lbr_gru = Keras' GRU with
// reset_after=True, vanilla_lstm = Keras' LSTM), forward and backward.
//
// Layouts are Keras' own, so the op reads the layer's variables as they are:
//   x                 [batch, time, features]      (oneDNN "ntc")
//   kernel            [features, gates * units]    (oneDNN "ldigo", gates in
//   recurrent_kernel  [units, gates * units]        Keras' order: GRU z r h,
//                                                   LSTM i f c o, as oneDNN's)
//   bias              GRU [2, 3 * units]: the input and recurrent biases;
//                     LSTM [4 * units]
//   y                 [batch, time, units]: every step's hidden state
// The initial state is zero. The GRU's bias becomes oneDNN's four lbr_gru
// biases: z and r input + recurrent (they add), the candidate's input bias,
// and its recurrent bias (inside the reset product, as in reset_after).
//
// Primitive descriptors are cached per shape; each call gets its own
// scratchpad (user-managed), so replicas may run the op concurrently.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace seqmnist {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

struct Shape {
  bool gru;
  int64_t batch, time, features, units;
  bool operator<(const Shape& o) const {
    return std::tie(gru, batch, time, features, units) <
           std::tie(o.gru, o.batch, o.time, o.features, o.units);
  }
  int64_t gates() const { return gru ? 3 : 4; }
  memory::desc src() const {
    return memory::desc({time, batch, features}, dt::f32, tag::ntc);
  }
  memory::desc dst() const {
    return memory::desc({time, batch, units}, dt::f32, tag::ntc);
  }
  memory::desc weights_layer(tag t) const {
    return memory::desc({1, 1, features, gates(), units}, dt::f32, t);
  }
  memory::desc weights_iter(tag t) const {
    return memory::desc({1, 1, units, gates(), units}, dt::f32, t);
  }
  // lbr_gru has gates + 1 biases; vanilla_lstm one per gate: 4 either way.
  memory::desc bias() const {
    return memory::desc({1, 1, 4, units}, dt::f32, tag::ldgo);
  }
};

dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The forward-training descriptor (also the backward one's hint).
dnnl::primitive_desc_base ForwardDesc(const Shape& s, bool training) {
  auto kind = training ? dnnl::prop_kind::forward_training
                       : dnnl::prop_kind::forward_inference;
  auto dir = dnnl::rnn_direction::unidirectional_left2right;
  memory::desc none;
  if (s.gru) {
    return dnnl::lbr_gru_forward::primitive_desc(
        Engine(), kind, dir, s.src(), none, s.weights_layer(tag::any),
        s.weights_iter(tag::any), s.bias(), s.dst(), none, Attr());
  }
  return dnnl::lstm_forward::primitive_desc(
      Engine(), kind, dir, s.src(), none, none, s.weights_layer(tag::any),
      s.weights_iter(tag::any), s.bias(), s.dst(), none, none, Attr());
}

dnnl::primitive_desc_base BackwardDesc(const Shape& s,
                                       const dnnl::primitive_desc_base& fwd) {
  auto dir = dnnl::rnn_direction::unidirectional_left2right;
  memory::desc none;
  if (s.gru) {
    return dnnl::lbr_gru_backward::primitive_desc(
        Engine(), dnnl::prop_kind::backward, dir, s.src(), none,
        s.weights_layer(tag::any), s.weights_iter(tag::any), s.bias(),
        s.dst(), none, s.src(), none, s.weights_layer(tag::any),
        s.weights_iter(tag::any), s.bias(), s.dst(), none,
        dnnl::lbr_gru_forward::primitive_desc(fwd.get()), Attr());
  }
  return dnnl::lstm_backward::primitive_desc(
      Engine(), dnnl::prop_kind::backward, dir, s.src(), none, none,
      s.weights_layer(tag::any), s.weights_iter(tag::any), s.bias(), s.dst(),
      none, none, s.src(), none, none, s.weights_layer(tag::any),
      s.weights_iter(tag::any), s.bias(), s.dst(), none, none,
      dnnl::lstm_forward::primitive_desc(fwd.get()), Attr());
}

struct Primitives {
  dnnl::primitive_desc_base pd;
  dnnl::primitive primitive;
};

// One cache entry per (shape, purpose); purpose 0 inference, 1 training,
// 2 backward.
const Primitives& Cached(const Shape& s, int purpose) {
  static std::mutex* mu = new std::mutex;
  static auto* cache = new std::map<std::pair<Shape, int>,
                                    std::unique_ptr<Primitives>>;
  std::lock_guard<std::mutex> lock(*mu);
  auto& slot = (*cache)[{s, purpose}];
  if (!slot) {
    auto pd = purpose == 2 ? BackwardDesc(s, ForwardDesc(s, true))
                           : ForwardDesc(s, purpose == 1);
    slot.reset(new Primitives{pd, dnnl::primitive(pd.get())});
  }
  return *slot;
}

memory::desc Arg(const dnnl::primitive_desc_base& pd, int arg) {
  return pd.query_md(dnnl::query::exec_arg_md, arg);
}

// A TF temporary buffer of `bytes`, wrapped as a oneDNN memory of `desc`.
memory Temp(OpKernelContext* ctx, const memory::desc& desc, Tensor* holder) {
  int64_t bytes = static_cast<int64_t>(desc.get_size());
  auto status = ctx->allocate_temp(
      tensorflow::DT_UINT8, TensorShape({bytes > 0 ? bytes : 1}), holder);
  if (!status.ok()) throw dnnl::error(dnnl_out_of_memory, "allocate_temp");
  return memory(desc, Engine(), holder->flat<uint8_t>().data());
}

memory Wrap(const memory::desc& desc, const Tensor& t) {
  return memory(desc, Engine(), const_cast<float*>(t.flat<float>().data()));
}

// `user` in the primitive's layout `want`: itself, or a reordered copy.
memory InLayout(OpKernelContext* ctx, dnnl::stream& stream, memory user,
                const memory::desc& want, Tensor* holder) {
  if (user.get_desc() == want) return user;
  memory out = Temp(ctx, want, holder);
  dnnl::reorder(user, out).execute(stream, user, out);
  return out;
}

Shape ShapeOf(OpKernelContext* ctx, bool gru) {
  const Tensor& x = ctx->input(0);
  const Tensor& recurrent = ctx->input(2);
  return Shape{gru, x.dim_size(0), x.dim_size(1), x.dim_size(2),
               recurrent.dim_size(0)};
}

bool CheckInputs(OpKernelContext* ctx, const Shape& s) {
  const int64_t g = s.gates(), u = s.units;
  const Tensor& kernel = ctx->input(1);
  const Tensor& recurrent = ctx->input(2);
  const Tensor& bias = ctx->input(3);
  bool ok = kernel.dims() == 2 && kernel.dim_size(0) == s.features &&
            kernel.dim_size(1) == g * u && recurrent.dims() == 2 &&
            recurrent.dim_size(1) == g * u &&
            bias.NumElements() == (s.gru ? 2 * g * u : g * u);
  if (!ok) {
    ctx->CtxFailure(tensorflow::errors::InvalidArgument(
        "SeqmnistFusedRnn: kernel, recurrent_kernel and bias do not match a ",
        s.gru ? "GRU" : "LSTM", " of ", u, " units over ", s.features,
        " features"));
  }
  return ok && s.batch > 0 && s.time > 0;
}

// oneDNN's four biases [4, units] from the layer's bias.
void LbrBias(const Shape& s, const float* keras, float* out) {
  const int64_t u = s.units, row = 3 * u;
  if (!s.gru) {
    std::copy(keras, keras + 4 * u, out);
    return;
  }
  for (int64_t j = 0; j < u; ++j) {
    out[j] = keras[j] + keras[row + j];                   // z
    out[u + j] = keras[u + j] + keras[row + u + j];       // r
    out[2 * u + j] = keras[2 * u + j];                    // candidate, input
    out[3 * u + j] = keras[row + 2 * u + j];              // candidate, recurrent
  }
}

// The op's weights as the primitive `pd` reads them: the kernels in its
// layout (reordered copies when it wants another) and oneDNN's four biases.
// The Tensors hold the copies for the call's duration.
struct Weights {
  Tensor layer_copy, iter_copy, bias_copy;
  memory layer, iter, bias;
};

void PrepareWeights(OpKernelContext* ctx, dnnl::stream& stream,
                    const dnnl::primitive_desc_base& pd, const Shape& s,
                    Weights* w) {
  w->layer = InLayout(ctx, stream,
                      Wrap(s.weights_layer(tag::ldigo), ctx->input(1)),
                      Arg(pd, DNNL_ARG_WEIGHTS_LAYER), &w->layer_copy);
  w->iter = InLayout(ctx, stream,
                     Wrap(s.weights_iter(tag::ldigo), ctx->input(2)),
                     Arg(pd, DNNL_ARG_WEIGHTS_ITER), &w->iter_copy);
  auto status = ctx->allocate_temp(tensorflow::DT_FLOAT,
                                   TensorShape({4 * s.units}), &w->bias_copy);
  if (!status.ok()) throw dnnl::error(dnnl_out_of_memory, "allocate_temp");
  LbrBias(s, ctx->input(3).flat<float>().data(),
          w->bias_copy.flat<float>().data());
  w->bias = Wrap(s.bias(), w->bias_copy);
}

class FusedRnnOp : public OpKernel {
 public:
  explicit FusedRnnOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
    gru_ = cell == "gru";
  }

  void Compute(OpKernelContext* ctx) override {
    const Shape s = ShapeOf(ctx, gru_);
    if (!CheckInputs(ctx, s)) {
      if (ctx->status().ok()) {  // an empty batch or sequence
        Tensor* y;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(
            0, TensorShape({s.batch, s.time, s.units}), &y));
        y->flat<float>().setZero();
        Tensor* ws;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({0}), &ws));
      }
      return;
    }
    try {
      Run(ctx, s);
    } catch (const dnnl::error& e) {
      ctx->CtxFailure(tensorflow::errors::Internal(
          "oneDNN RNN forward failed: ", e.what()));
    }
  }

 private:
  void Run(OpKernelContext* ctx, const Shape& s) {
    const Primitives& p = Cached(s, training_ ? 1 : 0);
    dnnl::stream stream(Engine());
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
        0, TensorShape({s.batch, s.time, s.units}), &y));
    Tensor scratch, *ws;
    Weights w;
    PrepareWeights(ctx, stream, p.pd, s, &w);
    memory::desc ws_desc = Arg(p.pd, DNNL_ARG_WORKSPACE);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
        1, TensorShape({static_cast<int64_t>(training_ ? ws_desc.get_size()
                                                       : 0)}), &ws));
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, Wrap(s.src(), ctx->input(0))},
        {DNNL_ARG_WEIGHTS_LAYER, w.layer},
        {DNNL_ARG_WEIGHTS_ITER, w.iter},
        {DNNL_ARG_BIAS, w.bias},
        {DNNL_ARG_DST_LAYER, Wrap(s.dst(), *y)},
        {DNNL_ARG_SCRATCHPAD, Temp(ctx, Arg(p.pd, DNNL_ARG_SCRATCHPAD), &scratch)},
    };
    if (training_) {
      args[DNNL_ARG_WORKSPACE] =
          memory(ws_desc, Engine(), ws->flat<uint8_t>().data());
    }
    p.primitive.execute(stream, args);
    stream.wait();
  }

  bool gru_;
  bool training_;
};

class FusedRnnGradOp : public OpKernel {
 public:
  explicit FusedRnnGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    gru_ = cell == "gru";
  }

  void Compute(OpKernelContext* ctx) override {
    const Shape s = ShapeOf(ctx, gru_);
    Tensor *dx, *dkernel, *drecurrent, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dx));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(1, ctx->input(1).shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(),
                                             &drecurrent));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ctx->input(3).shape(), &dbias));
    if (!CheckInputs(ctx, s)) {
      if (ctx->status().ok()) {
        for (Tensor* t : {dx, dkernel, drecurrent, dbias}) {
          t->flat<float>().setZero();
        }
      }
      return;
    }
    try {
      Run(ctx, s, dx, dkernel, drecurrent, dbias);
    } catch (const dnnl::error& e) {
      ctx->CtxFailure(tensorflow::errors::Internal(
          "oneDNN RNN backward failed: ", e.what()));
    }
  }

 private:
  void Run(OpKernelContext* ctx, const Shape& s, Tensor* dx, Tensor* dkernel,
           Tensor* drecurrent, Tensor* dbias) {
    const Primitives& p = Cached(s, 2);
    dnnl::stream stream(Engine());
    const Tensor& workspace = ctx->input(5);
    memory::desc ws_desc = Arg(p.pd, DNNL_ARG_WORKSPACE);
    OP_REQUIRES(ctx, workspace.NumElements() ==
                         static_cast<int64_t>(ws_desc.get_size()),
                tensorflow::errors::InvalidArgument(
                    "SeqmnistFusedRnnGrad: the workspace is not the forward "
                    "training pass's of this shape"));
    Tensor scratch, dw_layer, dw_iter, dbias_t;
    Weights w;
    PrepareWeights(ctx, stream, p.pd, s, &w);
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
        tensorflow::DT_FLOAT, TensorShape({4 * s.units}), &dbias_t));
    dbias_t.flat<float>().setZero();

    // The backward primitive accumulates into the weight gradients: they
    // start at zero, in the primitive's layout, then go to Keras'.
    memory::desc dwl_desc = Arg(p.pd, DNNL_ARG_DIFF_WEIGHTS_LAYER);
    memory::desc dwi_desc = Arg(p.pd, DNNL_ARG_DIFF_WEIGHTS_ITER);
    memory dwl_user = Wrap(s.weights_layer(tag::ldigo), *dkernel);
    memory dwi_user = Wrap(s.weights_iter(tag::ldigo), *drecurrent);
    memory dwl = dwl_desc == dwl_user.get_desc()
                     ? dwl_user : Temp(ctx, dwl_desc, &dw_layer);
    memory dwi = dwi_desc == dwi_user.get_desc()
                     ? dwi_user : Temp(ctx, dwi_desc, &dw_iter);
    std::memset(dwl.get_data_handle(), 0, dwl_desc.get_size());
    std::memset(dwi.get_data_handle(), 0, dwi_desc.get_size());

    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, Wrap(s.src(), ctx->input(0))},
        {DNNL_ARG_WEIGHTS_LAYER, w.layer},
        {DNNL_ARG_WEIGHTS_ITER, w.iter},
        {DNNL_ARG_BIAS, w.bias},
        {DNNL_ARG_DST_LAYER, Wrap(s.dst(), ctx->input(4))},
        {DNNL_ARG_WORKSPACE,
         memory(ws_desc, Engine(),
                const_cast<uint8_t*>(workspace.flat<uint8_t>().data()))},
        {DNNL_ARG_DIFF_DST_LAYER, Wrap(s.dst(), ctx->input(6))},
        {DNNL_ARG_DIFF_SRC_LAYER, Wrap(s.src(), *dx)},
        {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi},
        {DNNL_ARG_DIFF_BIAS, Wrap(s.bias(), dbias_t)},
        {DNNL_ARG_SCRATCHPAD, Temp(ctx, Arg(p.pd, DNNL_ARG_SCRATCHPAD), &scratch)},
    };
    p.primitive.execute(stream, args);
    if (dwl != dwl_user) dnnl::reorder(dwl, dwl_user).execute(stream, dwl, dwl_user);
    if (dwi != dwi_user) dnnl::reorder(dwi, dwi_user).execute(stream, dwi, dwi_user);
    stream.wait();

    const float* db = dbias_t.flat<float>().data();
    float* out = dbias->flat<float>().data();
    const int64_t u = s.units;
    if (!s.gru) {
      std::copy(db, db + 4 * u, out);
      return;
    }
    // z and r: the input and recurrent biases add, so both get the gradient.
    for (int64_t j = 0; j < 2 * u; ++j) out[j] = out[3 * u + j] = db[j];
    for (int64_t j = 0; j < u; ++j) {
      out[2 * u + j] = db[2 * u + j];
      out[5 * u + j] = db[3 * u + j];
    }
  }

  bool gru_;
};

REGISTER_OP("SeqmnistFusedRnn")
    .Input("x: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("bias: float")
    .Output("y: float")
    .Output("workspace: uint8")
    .Attr("cell: {'gru', 'lstm'}")
    .Attr("training: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, recurrent;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &recurrent));
      c->set_output(0, c->MakeShape({c->Dim(x, 0), c->Dim(x, 1),
                                     c->Dim(recurrent, 0)}));
      c->set_output(1, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    });

REGISTER_OP("SeqmnistFusedRnnGrad")
    .Input("x: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("bias: float")
    .Input("y: float")
    .Input("workspace: uint8")
    .Input("dy: float")
    .Output("dx: float")
    .Output("dkernel: float")
    .Output("drecurrent_kernel: float")
    .Output("dbias: float")
    .Attr("cell: {'gru', 'lstm'}")
    .SetShapeFn([](InferenceContext* c) {
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("SeqmnistFusedRnn").Device(DEVICE_CPU),
                        FusedRnnOp);
REGISTER_KERNEL_BUILDER(Name("SeqmnistFusedRnnGrad").Device(DEVICE_CPU),
                        FusedRnnGradOp);

}  // namespace
}  // namespace seqmnist
