#version 450
#include "sld.glsl"
