# From run summaries to the paper's tables (src/offloadbench/aggregate.py). A run that left no
# summary still gets a row (status "missing"), so `snakemake --keep-going` shows what failed.


rule aggregate:
    input:
        summaries=expand("results/runs/{run}/summary.json", run=RUNS),
        metrics=expand("results/runs/{run}/metrics.jsonl", run=RUNS),
        memory=expand("results/memory/{run}.json", run=RUNS),
        base="results/eval/base.json",
    output:
        multiext("results/tables/comparison", ".csv", ".md", ".tex"),
        multiext("results/tables/relative", ".csv", ".md", ".tex"),
        "results/tables/paper.tex",
        multiext("results/tables/seeds", ".csv", ".md", ".tex"),
        seeds=report("results/tables/seeds.html", caption="../report/seeds.rst", category="2 Tables"),
        comparison=report("results/tables/comparison.html", caption="../report/comparison.rst", category="2 Tables"),
        relative=report("results/tables/relative.html", caption="../report/relative.rst", category="2 Tables"),
        provenance=report("results/tables/provenance.html", caption="../report/provenance.rst", category="6 Provenance"),
        memory=multiext("results/tables/memory", ".csv", ".md"),
        memory_html=report("results/tables/memory.html", caption="../report/memory.rst", category="4 Memory model"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/aggregate/tables.tsv",
    log:
        "results/logs/aggregate/tables.log",
    params:
        spec=as_arg(
            {
                "runs": RUNS,
                "baseline_run": config["baseline_run"],
                "profile": config["profile"],
                "twin_tolerance": config["twins"]["tolerance"],
                "repeats": repeats_of(config),
            }
        ),
        out=lambda w, output: os.path.dirname(output.comparison),
    shell:
        "python -m offloadbench.aggregate --spec {params.spec:q} --runs-dir results/runs --memory-dir results/memory"
        " --base {input.base} --out {params.out} > {log} 2>&1"


rule claims:
    input:
        summaries=expand("results/runs/{run}/summary.json", run=RUNS),
        metrics=expand("results/runs/{run}/metrics.jsonl", run=RUNS),
        base="results/eval/base.json",
        claims=CLAIMS,
        predict=PREDICTION,
    output:
        json="results/claims.json",
        md="results/claims.md",
        html=report("results/claims.html", caption="../report/claims.rst", category="1 Claims"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/claims/claims.tsv",
    log:
        "results/logs/claims/claims.log",
    params:
        profile=config["profile"],
        runs=" ".join(CLAIM_RUNS),
        twins=as_arg(config["twins"]["tolerance"]),
        predict=lambda w, input: f"--predict {input.predict[0]} {input.predict[1]}" if input.predict else "",
    shell:
        "python -m offloadbench.claims --claims {input.claims} --runs-dir results/runs --base {input.base}"
        " --profile {params.profile} --runs {params.runs} --twin-tolerance {params.twins:q} {params.predict}"
        " --out {output.json} > {log} 2>&1"


# The headline numbers as LaTeX macros for the paper's text (src/offloadbench/numbers.py).
rule numbers:
    input:
        table="results/tables/comparison.csv",
        claims="results/claims.json",
    output:
        "results/tables/numbers.tex",
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/numbers/numbers.tsv",
    log:
        "results/logs/numbers/numbers.log",
    shell:
        "python -m offloadbench.numbers --table {input.table} --claims {input.claims} --out {output} > {log} 2>&1"


# This run's comparison table against results/reference/<profile>/ (src/offloadbench/reference.py).
# Deviations outside the tolerances are reported, not fatal: a reviewer reads reference.md. On data
# other than the reference's (hashes of each dataset's text and blocks) it judges nothing, and says so.
rule compare_reference:
    input:
        table="results/tables/comparison.csv",
        data=expand("results/data/{dataset}", dataset=DATASETS),
        reference=reference_files,
    output:
        json="results/compare/reference.json",
        md="results/compare/reference.md",
        html=report("results/compare/reference.html", caption="../report/reference.rst", category="5 Reference"),
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/compare_reference/reference.tsv",
    log:
        "results/logs/compare_reference/reference.log",
    params:
        reference=REFERENCE,
        tolerances=as_arg(config["reference"]["tolerances"]),
    shell:
        "python -m offloadbench.reference compare --table {input.table} --reference {params.reference:q}"
        " --tolerances {params.tolerances:q} --data {input.data} --out {output.json} > {log} 2>&1"


# The paper's figures (src/offloadbench/figures/): loss curves, peak memory (measured, with the
# memory model's predicted components stacked beside it), throughput. PNG and PDF.
rule figures:
    input:
        summaries=expand("results/runs/{run}/summary.json", run=RUNS),
        metrics=expand("results/runs/{run}/metrics.jsonl", run=RUNS),
        memory=expand("results/memory/{run}.json", run=RUNS),
        base="results/eval/base.json",
        claims=CLAIMS,
    output:
        loss=report("results/figures/loss_curves.png", caption="../report/loss_curves.rst", category="3 Figures"),
        memory=report("results/figures/memory.png", caption="../report/memory_figure.rst", category="3 Figures"),
        speed=report("results/figures/throughput.png", caption="../report/throughput.rst", category="3 Figures"),
        pdf=multiext("results/figures/", "loss_curves.pdf", "memory.pdf", "throughput.pdf"),
        sweep=[report(f, caption="../report/sweep.rst", category="3 Figures") for f in SWEEP_FIGURES],
    conda:
        "../envs/offloadbench.yaml"
    benchmark:
        "results/benchmarks/figures/figures.tsv",
    log:
        "results/logs/figures/figures.log",
    params:
        runs=" ".join(CLAIM_RUNS),
        sweep=f"--sweep-runs {' '.join(SWEEP_RUNS)}" if SWEEP_RUNS else "",
        out=lambda w, output: os.path.dirname(output.loss),
    shell:
        "python -m offloadbench.figures --runs-dir results/runs --runs {params.runs} {params.sweep}"
        " --base {input.base} --memory-dir results/memory --claims {input.claims} --out {params.out} > {log} 2>&1"
