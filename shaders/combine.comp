#version 450
#include "combine.glsl"
