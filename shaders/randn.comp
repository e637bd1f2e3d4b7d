#version 450
#include "randn.glsl"
