// The interface of the convolution shaders that can fold a GroupNorm into their input:
// nn_conv2d.glsl (float32 tiles), nn_conv2d_f16.comp and nn_conv2d_coop.glsl (float16 weights):
// their six bindings and their push block, declared once. The C side is csrc/vk_nn.h
// ccfg_vk_push_conv2d_tiled (this block, member for member) and CCFG_VK_CONV_TILED_BINDINGS (the
// bindings, in this order: csrc/backend_vk.c's pipeline table), filled by csrc/nn_vk.c.
// The includer defines CONV_WEIGHT, the element type of w: float, or float16_t (2 weights per
// 32-bit element of the layer's packed form; its extension enabled before the include). ow and
// wstride then count elements of that type.
// Every array is a buffer plus an element offset (backend_vk.c device addresses).
#ifndef CONV_WEIGHT
#error "nn_conv2d_io.glsl: define CONV_WEIGHT (the weights' element type) before including it"
#endif
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { CONV_WEIGHT wt[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
// the residual (cout x P like y; may be y itself), read only with flags bit 2
layout(std430, binding = 4) readonly buffer R { float r[]; };
// a GroupNorm folded in (flags bit 3): (a, d) per sample b and input channel ci at
// ab[oab + 2 (b abstride + ci)] and the next element (nn.h group_norm_affine)
layout(std430, binding = 5) readonly buffer AB { float ab[]; };

layout(push_constant) uniform Push {
    uint ox, ow, ob, oy, ores, oab;
    uint batch, cin, h, w, cout, k, stride, pad0, ho, wo;
    // bit 0: bias present, bit 1: accumulate into y, bit 2: add the residual r, bit 3: the
    // input is read as x a + d (a GroupNorm folded in), bit 4: then SiLU
    uint flags;
    uint wstride;   // weights per output channel of w (every input channel x k x k)
    // split-K: stages per slice (0: no split). With it the y workgroups are slices x output-
    // channel tiles; slice s reduces stages [s split, (s + 1) split) and writes its raw partial
    // sums to slice s of y (scratch, slices x cout x P), ignoring the flags;
    // nn_conv2d_reduce.comp sums the slices in order and applies them. The cooperative-matrix
    // shaders have no split-K: always 0 there.
    uint split;
    uint abstride;  // input channels per sample of ab (every channel, not only this chunk's)
} p;
