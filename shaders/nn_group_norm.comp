#version 450
#include "nn_group_norm.glsl"
