# Data stage: download -> checksum -> preprocess (extract, validate, cache) -> split -> stats.
# The split rule seals the test split: every later rule but the evaluate rules (evaluate,
# evaluate_ensemble, evaluate_deployed) reads development.csv.


rule download:
    output:
        f"{RAW}/{{file}}",
    params:
        spec=file_spec,
        data_dir=config["data_dir"],
        dataverse=config["dataverse"],
    wildcard_constraints:
        file="|".join(map(re.escape, FILES)),
    benchmark:
        f"{BENCHMARKS}/download/{{file}}.tsv",
    log:
        f"{LOGS}/download/{{file}}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/download.py"


rule checksum:
    input:
        [raw(name) for name in FILES],
    output:
        f"{DATA}/checksums.csv",
    params:
        expected={name: {"size": s.size, "md5": s.md5} for name, s in FILES.items()},
    benchmark:
        f"{BENCHMARKS}/checksum.tsv",
    log:
        f"{LOGS}/checksum.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/checksum.py"


rule preprocess:
    input:
        zips=[raw("HAM10000_images_part_1.zip"), raw("HAM10000_images_part_2.zip")],
        metadata=raw("HAM10000_metadata.csv"),
        checksums=f"{DATA}/checksums.csv",
    output:
        images=f"{DATA}/images.npy",
        index=f"{DATA}/index.csv",
        skipped=f"{DATA}/skipped.csv",
    params:
        image_size=config["preprocess"]["image_size"],
        on_bad_image=config["preprocess"]["on_bad_image"],
    threads: 2
    resources:
        mem_mb=4000,
    benchmark:
        f"{BENCHMARKS}/preprocess.tsv",
    log:
        f"{LOGS}/preprocess.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/preprocess.py"


rule split:
    input:
        index=f"{DATA}/index.csv",
    output:
        split=f"{DATA}/split.csv",
        counts=f"{DATA}/split_counts.csv",
        development=DEVELOPMENT["split"],
    params:
        ratios=config["split"]["ratios"],
        seed=config["seed"],
    benchmark:
        f"{BENCHMARKS}/split.tsv",
    log:
        f"{LOGS}/split.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/split.py"


rule channel_stats:
    input:
        images=DEVELOPMENT["images"],
        index=DEVELOPMENT["index"],
        split=DEVELOPMENT["split"],
    output:
        DEVELOPMENT["stats"],
    benchmark:
        f"{BENCHMARKS}/channel_stats.tsv",
    log:
        f"{LOGS}/channel_stats.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/channel_stats.py"
