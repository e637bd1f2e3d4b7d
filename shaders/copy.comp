#version 450
// dst = src in vec4s (16 bytes per load): the device-memory bandwidth bound that benchmarks compare
// ccfg.guide with (benchmarks/bench_vulkan.py, gpu_vs_torch.py). Not used by sampling (the nn
// copy is a vkCmdCopyBuffer). A workgroup of 256 copies blocks of 4 x 256 vec4s (16 KiB): four
// independent 16-byte loads in flight per invocation before its stores, adjacent invocations at
// adjacent addresses; blocks in a grid-stride loop past the host's workgroup count.
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer S { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer D { vec4 dst[]; };

layout(push_constant) uniform Push { uint count; } p;

void main()
{
    const uint lid = gl_LocalInvocationID.x, blocks = (p.count + 1023u) / 1024u;
    for (uint blk = gl_WorkGroupID.x; blk < blocks; blk += gl_NumWorkGroups.x) {
        const uint i = blk * 1024u + lid;
        if (i + 768u < p.count) {
            const vec4 a = src[i], b = src[i + 256u], c = src[i + 512u], d = src[i + 768u];
            dst[i] = a;
            dst[i + 256u] = b;
            dst[i + 512u] = c;
            dst[i + 768u] = d;
        } else {
            for (uint j = i; j < p.count; j += 256u) dst[j] = src[j];
        }
    }
}
