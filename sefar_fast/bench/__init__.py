"""`sefar bench`: reproducible throughput, FLOP utilisation and memory measurements.

    runner      run_bench(): the sections, the rich table, the JSON record
    workload    the benchmark's configuration, synthetic batches and models
    reference   one SeFAR iteration run the way the authors' code runs it
    sections    data / model / iteration / memory measurements
    timing      warm-up + median timing (CUDA events), matmul peak, peak memory
    env         card, driver, versions and date of a record; result file names
    summary     the closing table of bench/gpu_check.sh
    train_store a synthetic prepared store for timing `sefar train`
"""
