#version 450
#include "coef.glsl"
