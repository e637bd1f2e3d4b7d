#version 450
// dst = src, 16 bytes per element: the device-memory bandwidth bound that benchmarks compare
// ccfg.guide with (benchmarks/bench_vulkan.py, gpu_vs_torch.py). Not used by sampling (the nn
// copy is a vkCmdCopyBuffer). One vec4 per invocation and round of a grid-stride loop: a variant
// with four vec4 loads in flight per invocation (blocks of 4 x 128) measured 0.75x of this one on
// lavapipe and is not kept until a GPU says otherwise (docs/PERFORMANCE.md).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer S { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer D { vec4 dst[]; };

layout(push_constant) uniform Push { uint count; } p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) dst[i] = src[i];
}
