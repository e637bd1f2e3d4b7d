/* backend.c — the backend registry: a backend is opened by name ("cpu", "vulkan:0").
 *
 * One driver per kind of device. Adding a backend: its own files (memory, transfers, sync and the
 * capability tables of ccfg.h: guide, gmm, nn) and one line in `drivers` below. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

typedef struct {
    const char *prefix;             /* the name, or the part before ":N" */
    int indexed;                    /* 1: names are "prefix:N" */
    int (*open)(int index, const ccfg_backend **out);
} backend_driver;

static int open_cpu(int index, const ccfg_backend **out)
{
    (void)index;
    *out = ccfg_backend_cpu();
    return CCFG_OK;
}

static const backend_driver drivers[] = {
    {"cpu", 0, open_cpu},
    {"vulkan", 1, ccfg_backend_vulkan},
};

int ccfg_backend_open(const char *name, const ccfg_backend **out)
{
    *out = NULL;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++) {
        const backend_driver *d = &drivers[i];
        const size_t len = strlen(d->prefix);
        if (strncmp(name, d->prefix, len) != 0) continue;
        if (!d->indexed) {
            if (name[len] == '\0') return d->open(-1, out);
            continue;
        }
        if (name[len] != ':' || name[len + 1] < '0' || name[len + 1] > '9') continue;
        char *end;
        errno = 0;
        long index = strtol(name + len + 1, &end, 10);
        if (*end != '\0' || errno || index > 1 << 20) continue;
        return d->open((int)index, out);
    }
    return ccfg_fail(CCFG_EINVAL, "device: no backend named '%s' (known: cpu, vulkan:N)", name);
}

int ccfg_backend_from_host(const ccfg_backend *be, const float *host, size_t count, float **out)
{
    int status;
    *out = NULL;
    if (be->host_memory) {
        *out = (float *)host;
        return CCFG_OK;
    }
    if ((status = be->alloc(be, count * sizeof(float), out))) return status;
    return be->upload(be, *out, host, count * sizeof(float));
}

void ccfg_backend_drop(const ccfg_backend *be, float *p)
{
    if (p && !be->host_memory) be->release(be, p);
}
