"""Example options for every registered transport rule; the contract suite runs them all.
A new rule registered without an entry here makes the suite fail on purpose."""

EXAMPLES = {
    "full": [{}],
    "immediate": [{}],
    "trace": [{"decay": 0.8}],
    "sparse": [
        {"k": 2, "seed": 4},
        {"k": 2, "granularity": "column", "seed": 4, "resample_every": 2},
        {"k": 1, "selection": "magnitude", "keep_diagonal": True, "rescale": True},
    ],
    "snap1": [{}],
    "uoro": [{"seed": 3}],
    "kf": [{"seed": 5}],  # the vanilla cell only: the suite skips the others (check_context)
    "shadow": [{"rule": "immediate"}, {"rule": "snap1"}],
}


def cases(rules):
    out = []
    for name in sorted(rules):
        for options in EXAMPLES.get(name, [None]):
            out.append((name, options))
    return out


def case_id(case):
    name, options = case
    return name + ("" if not options else "-" + "-".join(f"{k}={v}" for k, v in options.items()))

EXAMPLES["tbptt"] = [{"window": 3}]
