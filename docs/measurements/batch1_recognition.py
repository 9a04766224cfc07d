"""(d) with recognition against (d) with redelivery = counted: three trials each, alternating.
Run from the repository root: python docs/measurements/batch1_recognition.py"""

import statistics

from harness.bench import pipeline as bench
from harness.infra.config import Settings
from harness.store.postgres import Store
from harness.trials import cluster

settings = Settings.from_env() if hasattr(Settings, "from_env") else Settings()
bench.SHAPES["g"] = ("d, counted", {**bench.SHAPES["d"][1], "redelivery": "counted"})
cfg = bench.BenchConfig()
cluster.init(settings)
out = {"d": [], "g": []}
try:
    with Store(settings.pg_dsn, schema=settings.pg_schema) as store:
        store.create_schema()
        for r in range(3):
            for key in ("d", "g") if r % 2 == 0 else ("g", "d"):
                bench._clean_slate(store)
                m, res = bench.pipeline(settings, cfg, key)
                out[key].append(m.events_per_s)
                print(key, round(m.events_per_s), m.verified, flush=True)
finally:
    cluster.shutdown()
print(
    {k: round(statistics.median(v)) for k, v in out.items()},
    "d/g",
    statistics.median(out["d"]) / statistics.median(out["g"]),
)
