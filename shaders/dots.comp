#version 450
#include "dots.glsl"
