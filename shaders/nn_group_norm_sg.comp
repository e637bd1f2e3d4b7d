#version 450
#extension GL_KHR_shader_subgroup_arithmetic : require
#define SUBGROUP 1
#include "nn_group_norm.glsl"
