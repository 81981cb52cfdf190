import json


def test_smoke_run_writes_a_complete_run_dir(smoke_run):
    for name in ("params.yaml", "version.json", "checkpoint.pt", "history.json", "subset_indices.npy",
                 "features.pt", "metrics.json", "log.txt"):
        assert (smoke_run / name).is_file(), name
    m = json.loads((smoke_run / "metrics.json").read_text())
    assert m["alpha"] == 1.0 and m["epochs_trained"] == 3
    for key in ("softmax", "tde"):
        assert set(m[key]) >= {"many", "medium", "few", "overall", "per_class"}
        assert 0.0 <= m[key]["overall"] <= 1.0
