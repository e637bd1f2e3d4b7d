/* backend.c — the backend registry: a backend is opened by name ("cpu", "vulkan:0") and lists
 * the devices it offers.
 *
 * One driver per kind of device. Adding a backend: its own files (memory, transfers, sync and the
 * capability tables of ccfg.h: guide, gmm, nn, an open and a list function) and one line in
 * `drivers` below. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

typedef struct {
    const char *prefix;             /* the name, or the part before ":N" */
    int indexed;                    /* 1: names are "prefix:N" */
    int (*open)(int index, const ccfg_backend **out);
    /* up to max devices into out (name, index, label, type, available); returns how many; with
     * none, *why says why */
    int (*list)(ccfg_device *out, int max, const char **why);
} backend_driver;

static const backend_driver drivers[] = {
    {"cpu", 0, ccfg_backend_cpu_open, ccfg_backend_cpu_list},             /* backend_cpu.c */
    {"vulkan", 1, ccfg_backend_vulkan, ccfg_backend_vulkan_list},         /* backend_vk.c */
};

enum { MAX_LISTED = 64 };

int ccfg_devices(const ccfg_device **list, int *count)
{
    static ccfg_device found[MAX_LISTED];
    int n = 0;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0] && n < MAX_LISTED; i++) {
        const backend_driver *d = &drivers[i];
        const char *why = NULL;
        memset(found + n, 0, (size_t)(MAX_LISTED - n) * sizeof *found);
        for (int j = n; j < MAX_LISTED; j++) found[j].index = -1;
        int got = d->list(found + n, MAX_LISTED - n, &why);
        if (got == 0) {                 /* listed once, with the reason */
            snprintf(found[n].name, sizeof found[n].name, "%s", d->prefix);
            found[n].type = "other";
            found[n].note = why ? why : "no device";
            got = 1;
        }
        for (int j = n; j < n + got; j++) found[j].backend = d->prefix;
        n += got;
    }
    *list = found;
    *count = n;
    return CCFG_OK;
}

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
