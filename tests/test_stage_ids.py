"""Stage ids change exactly when a stage's result could (issue 14): with the settings it uses,
the code versions of its metric, quantizer, method and training loop, the runtime's library
versions, the dataset's content and the models its references come from; and not with
another method's settings. Plans only: nothing is trained."""

from __future__ import annotations

from harness.orchestration.experiment import load_experiment
from harness.orchestration.plan import build_plan


def _ids(flags=None, **changes) -> dict[tuple, str]:
    exp = load_experiment(None, {"methods": "ga_gdr,npo_gdr", "quant": "bf16,rtn4", **(flags or {})})
    for key, value in changes.items():
        setattr(exp, key, value)
    return {(s.kind, s.method or s.model, s.mode, s.quant): s.id for s in build_plan(exp).stages.values()}


def _changed(before: dict, after: dict) -> set[tuple]:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_one_methods_setting_recomputes_only_that_method():
    base = _ids()
    after = _ids(unlearning={"methods": {"npo_gdr": {"full": {"lr": 3.0e-4}}}})
    assert _changed(base, after) == {k for k in base if k[1] == "npo_gdr" and k[2] == "full"}


def test_a_metric_version_recomputes_evaluations_not_unlearning(monkeypatch):
    import tasks.evaluate

    base = _ids()
    monkeypatch.setattr(tasks.evaluate, "METRICS_VERSION", tasks.evaluate.METRICS_VERSION + 1)
    changed = _changed(base, _ids())
    assert changed == {k for k in base if k[0] == "evaluate"}


def test_a_quantizer_version_recomputes_its_rows_only(monkeypatch):
    from quantizers.rtn import RTN4

    base = _ids()
    monkeypatch.setattr(RTN4, "version", RTN4.version + 1)
    assert _changed(base, _ids()) == {k for k in base if k[3] == "rtn4"}


def test_a_method_version_and_a_library_version(monkeypatch):
    import harness.provenance
    from harness.plugins import registry

    base = _ids()
    cls = registry("methods").get("ga_gdr")
    monkeypatch.setattr(cls, "version", cls.version + 1)
    assert _changed(base, _ids()) == {k for k in base if k[1] == "ga_gdr"}
    monkeypatch.undo()
    versions = harness.provenance.library_versions()
    monkeypatch.setattr(harness.provenance, "library_versions", lambda: {**versions, "transformers": "99.0"})
    assert _changed(base, _ids()) == set(base)  # every stage: another transformers may compute otherwise


def test_dataset_content_and_the_retrain_model_enter_the_ids(tmp_path):
    from tasks.data import write_muse_folder
    from tests.conftest import small_muse_rows

    rows = small_muse_rows()
    folder = write_muse_folder(tmp_path / "d", rows)
    models = {"muse_tiny": {"dataset": str(folder)}}
    base = _ids(models=models)
    assert base == _ids(models=models)
    rows["raw"]["forget"][0] = {"text": "Document number 0 tells another story."}
    write_muse_folder(folder, rows)
    assert _changed(base, _ids(models=models)) == set(base)  # unlearning trains on it, evaluations read it
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    (retrain / "config.json").write_text("{}")
    other = _ids(models={"muse_tiny": {"dataset": str(folder), "retrain_model": str(retrain)}})
    changed = _changed(_ids(models=models), other)
    # the retrain model is a baseline row and the AUC reference of every evaluation, not an input of unlearning
    assert changed == {k for k in base if k[0] == "evaluate"}


def test_model_stamp_of_a_hub_id_names_the_cached_commit(tmp_path, monkeypatch):
    import huggingface_hub

    from tasks.data import model_stamp

    snapshot = tmp_path / "models--org--m" / "snapshots" / "abc123" / "config.json"
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: str(snapshot))
    assert model_stamp("org/m") == "org/m@abc123"
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    assert model_stamp("org/m") == "org/m@unresolved"


def test_stage_ids_do_not_depend_on_the_reference_option():
    """Naming bf16 as the reference, or opting out, changes which stages exist, never an id."""
    with_ref, without = _ids(), _ids(reference=None)
    assert with_ref == without  # bf16 is requested in this grid either way


def test_the_dtype_models_load_in_enters_every_id(monkeypatch):
    import harness.modeling

    monkeypatch.setattr(harness.modeling, "_dtype_choice", "auto")
    base = _ids()
    bf16 = _ids({"dtype": "bf16"})
    assert harness.modeling.default_dtype("cpu") == __import__("torch").bfloat16
    assert _changed(base, bf16) == set(base)
    assert load_experiment(None, {"dtype": "bf16"}).identity()["dtype"] == "bf16"
    assert "dtype" not in load_experiment(None, {}).identity()
