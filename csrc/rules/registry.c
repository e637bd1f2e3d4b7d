/* rules/registry.c — every guidance rule the core knows, found by name. A new rule: its file in
 * csrc/rules/ defining `const ccfg_rule_impl ccfg_rule_NAME` (rules/rule.h) and one entry here. */
#include <string.h>

#include "rules/rule.h"

#define RULES(X)                                                                                  \
    X(none)                                                                                       \
    X(cfg)                                                                                        \
    X(negative_prompt)                                                                            \
    X(negated_cfg)                                                                                \
    X(perp_neg)                                                                                   \
    X(sld)                                                                                        \
    X(dng)                                                                                        \
    X(ccfg)                                                                                       \
    X(apg)

#define DECLARE(name) extern const ccfg_rule_impl ccfg_rule_##name;
RULES(DECLARE)
#define ENTRY(name) &ccfg_rule_##name,
static const ccfg_rule_impl *const rules[] = {RULES(ENTRY) NULL};

const ccfg_rule_impl *const *ccfg_rule_list(void) { return rules; }

const ccfg_rule_impl *ccfg_rule_find(const char *name)
{
    for (int i = 0; rules[i]; i++)
        if (!strcmp(rules[i]->name, name)) return rules[i];
    return NULL;
}
