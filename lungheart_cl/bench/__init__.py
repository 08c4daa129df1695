"""Speed benchmarks (`make bench` = ``python -m lungheart_cl.bench [--quick] [--out ...] [--sections ...]``).

Every section measures our figure and a baseline in the same run and prints the ratio, so the
numbers compare on whatever machine runs them:

1. ``cache``  -- building the segment cache of an ICBHI-sized synthetic dataset vs ``librosa.load`` per file;
2. ``loader`` -- the pretraining DataLoader (whole-batch reads) vs a one-item-per-``__getitem__`` dataset;
3. ``step``   -- a pretraining step split into data wait / front end + views / model compute, for
   `SmallCNN` and `ResNet18Encoder`, vs a reference-style pipeline that builds log-mels and masks in
   the DataLoader workers (numpy/librosa), as the original study's code did;
4. ``loss``   -- `MetadataNTXent` with negative keys vs a plain SimCLR NT-Xent, over global batch sizes;
5. ``memory`` -- peak memory of the step benchmark per encoder;
6. ``gpu``    -- fp32 / bf16 / channels_last / torch.compile step throughput (only with CUDA);
7. ``pool``   -- a pretraining pool of two synthetic heart sources: its cache build vs the sources' own builds,
   its DataLoader vs one source's.
8. ``heart``  -- pretraining on a real heart pool (PhysioNet 2016, ``--data-root``): pairs/s, data wait,
   user / system CPU time and epochs per minute, vs glibc's default heap and vs precomputed log-mels.

Benchmark data is generated once under ``cache/bench/`` (untimed) and reused; figures go to a JSON
file (default ``runs/bench/bench.json``). Speed is measured here, never in unit tests.
"""

SECTIONS = ("cache", "loader", "step", "loss", "memory", "gpu", "pool", "heart")
