#version 450
// nn_attention_coop.glsl on 16 x 16 x 16 cooperative matrices in subgroups of 32 (NVIDIA tensor
// cores; read the body), heads of up to 192 channels. Not yet run on any device.
#define C 16
#define SG 32
#define ATTN_NVC 3
#include "nn_attention_coop.glsl"
