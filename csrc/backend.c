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

static int open_cpu(int index, const ccfg_backend **out)
{
    (void)index;
    *out = ccfg_backend_cpu();
    return CCFG_OK;
}

static int list_cpu(ccfg_device *out, int max, const char **why)
{
    (void)why;
    if (max < 1) return 0;
    snprintf(out->name, sizeof out->name, "cpu");
    snprintf(out->label, sizeof out->label, "cpu");
    out->type = "cpu";
    out->available = 1;
    return 1;
}

static int list_vulkan(ccfg_device *out, int max, const char **why)
{
    const ccfg_vk_device_info *info;
    int count = 0;
    ccfg_vk_devices(&info, &count);
    if (count == 0) *why = ccfg_vk_unavailable();
    for (int i = 0; i < count && i < max; i++) {
        snprintf(out[i].name, sizeof out[i].name, "vulkan:%d", info[i].index);
        snprintf(out[i].label, sizeof out[i].label, "%s", info[i].name);
        out[i].index = info[i].index;
        out[i].type = info[i].type;
        out[i].available = info[i].usable;
    }
    return count < max ? count : max;
}

static const backend_driver drivers[] = {
    {"cpu", 0, open_cpu, list_cpu},
    {"vulkan", 1, ccfg_backend_vulkan, list_vulkan},
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
