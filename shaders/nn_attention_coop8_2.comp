#version 450
// nn_attention_coop.glsl on 8 x 8 x 8 cooperative matrices in subgroups of 8 (Mesa lavapipe >= 26;
// read the body), heads of up to 128 channels
#define C 8
#define SG 8
#define ATTN_NVC 2
#include "nn_attention_coop.glsl"
