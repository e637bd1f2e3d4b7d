#version 450
#extension GL_EXT_control_flow_attributes : require
#define ATTN_NVC 1u
#define ATTN_WG 256
#define ATTN_QS 1
#define ATTN_PREFETCH 1
#include "nn_attention_tiled.glsl"
