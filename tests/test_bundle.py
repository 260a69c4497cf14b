"""The bundle contract: manifest validation and file hashes, on real exported bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guard_sdk import (
    BundleIntegrityError,
    BundleNotFoundError,
    Guard,
    GuardBundle,
    GuardError,
    ManifestError,
    ModelMismatchError,
)
from guard_sdk.bundle import BundleManifest, BundleMetrics, ParityReport, TrainingRecord, write_manifest


@pytest.fixture()
def bundle_copy(multi_label_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(multi_label_bundle, copy)
    return copy


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "guard.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_exported_manifest_describes_the_bundle(multi_label_bundle: Path):
    bundle = GuardBundle.load(multi_label_bundle)
    m = bundle.manifest
    assert m.schema_version == 1 and m.id == "demo@1.0.0"
    assert m.problem_type == "multi_label"
    assert [label.name for label in m.labels] == ["abuse", "injection"]
    assert all(0.0 < label.threshold < 1.0 for label in m.labels)
    assert m.model.precision == "int8" and m.model.fp32_file == "model.fp32.onnx"
    assert set(m.files) == {"model.onnx", "model.fp32.onnx", "tokenizer.json", "NOTICE.md"}
    assert m.tokenizer.max_length == 64 and 0 < m.tokenizer.stride < 32
    assert m.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(m.training_data_sha256 or "") == 64
    parity = m.metrics.parity
    assert parity is not None
    assert parity.fp32_max_abs_diff < 1e-3 and parity.int8_max_abs_diff < 0.25
    assert parity.int8_mean_abs_diff < 0.02 and parity.int8_decision_agreement >= 0.95
    assert set(m.metrics.validation or {}) == {"abuse", "injection"}
    assert m.training.head == "classifier" and m.training.train_examples
    # int8 is the default model and is about a quarter of fp32
    assert (multi_label_bundle / "model.onnx").stat().st_size < 0.35 * (
        multi_label_bundle / "model.fp32.onnx"
    ).stat().st_size


def test_manifest_schema_round_trips(multi_label_bundle: Path):
    raw = (multi_label_bundle / "guard.json").read_text()
    assert BundleManifest.model_validate_json(raw) == GuardBundle.load(multi_label_bundle).manifest


def test_training_and_metrics_are_typed_and_round_trip(multi_label_bundle: Path, bundle_copy: Path):
    manifest = GuardBundle.load(multi_label_bundle).manifest
    assert isinstance(manifest.training, TrainingRecord) and isinstance(manifest.metrics, BundleMetrics)
    assert isinstance(manifest.metrics.parity, ParityReport) and manifest.metrics.calibration == "max_f1"
    assert BundleManifest.model_validate_json(manifest.model_dump_json()) == manifest

    # As earlier builders wrote them: no head (a classifier then), explicit nulls, a per-label calibration (zero-shot
    # bundles), and fields this runtime does not know, which are kept and written back.
    raw = json.loads((bundle_copy / "guard.json").read_text())
    training = {k: v for k, v in raw["training"].items() if k != "head"}
    training |= {"merge": None, "num_layers": None, "optimizer": "adamw"}
    metrics = {"calibration": {"abuse": "max F1 on 12 labeled seeds"}, "notes": {"by": "hand"}}
    _edit_manifest(bundle_copy, training=training, metrics=metrics)
    older = GuardBundle.load(bundle_copy).manifest
    assert older.training.head == "classifier" and older.training.num_layers is None
    assert older.training.model_extra == {"optimizer": "adamw"}
    assert older.metrics.calibration == {"abuse": "max F1 on 12 labeled seeds"} and older.metrics.parity is None
    written = json.loads(older.model_dump_json())
    assert written["training"]["optimizer"] == "adamw" and written["metrics"]["notes"] == {"by": "hand"}
    assert "merge" not in written["training"] and "validation" not in written["metrics"]  # unset: left out

    _edit_manifest(bundle_copy, training={}, metrics={})  # the oldest bundles
    oldest = GuardBundle.load(bundle_copy).manifest
    assert oldest.training == TrainingRecord() and oldest.metrics == BundleMetrics()
    _edit_manifest(bundle_copy, metrics={"parity": {"examples": "many"}})
    with pytest.raises(ManifestError, match="metrics.parity"):  # known fields are checked
        GuardBundle.load(bundle_copy)


def test_write_manifest_returns_the_pin(multi_label_bundle: Path, bundle_copy: Path):
    manifest = GuardBundle.load(multi_label_bundle).manifest
    relabelled = manifest.model_copy(update={"description": "rewritten"})
    pin = write_manifest(bundle_copy, relabelled)
    assert sorted(p.name for p in bundle_copy.iterdir()) == sorted(["guard.json", *manifest.files])  # nothing left
    loaded = GuardBundle.load(bundle_copy, sha256=pin)
    assert loaded.manifest == relabelled and loaded.manifest_sha256 == pin


def test_tampered_file_is_refused(bundle_copy: Path):
    with (bundle_copy / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(BundleIntegrityError, match="tokenizer.json does not match its sha256"):
        Guard(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleNotFoundError, match="model.onnx is listed"):
        Guard(bundle_copy)


def test_missing_folder_and_manifest(tmp_path: Path):
    with pytest.raises(BundleNotFoundError, match="no such folder"):
        GuardBundle.load(tmp_path / "nope")
    with pytest.raises(BundleNotFoundError, match="guard.json is missing"):
        GuardBundle.load(tmp_path)


def test_unknown_schema_version_is_refused(bundle_copy: Path):
    _edit_manifest(bundle_copy, schema_version=2)
    with pytest.raises(ManifestError, match="unknown manifest schema_version 2"):
        Guard(bundle_copy)


def test_invalid_manifest_names_the_field(bundle_copy: Path):
    _edit_manifest(bundle_copy, problem_type="regression")
    with pytest.raises(ManifestError, match="problem_type"):
        GuardBundle.load(bundle_copy)
    (bundle_copy / "guard.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        GuardBundle.load(bundle_copy)


def test_an_embedding_head_needs_a_hashed_file(bundle_copy: Path):
    model = json.loads((bundle_copy / "guard.json").read_text())["model"]
    _edit_manifest(bundle_copy, model={**model, "embedding": {"encoder_sha256": "0" * 64}})
    with pytest.raises(ManifestError, match=r"files \['head.npz'\] are used but have no sha256"):
        GuardBundle.load(bundle_copy)


def test_labels_that_do_not_match_the_model_are_refused(bundle_copy: Path):
    manifest = json.loads((bundle_copy / "guard.json").read_text())
    _edit_manifest(bundle_copy, labels=manifest["labels"] + [{"name": "extra", "threshold": 0.5}])
    with pytest.raises(ModelMismatchError, match="lists 3 labels .* outputs 2 scores"):
        Guard(bundle_copy)


def test_every_bundle_error_is_a_guard_error():
    for error in (BundleIntegrityError, BundleNotFoundError, ManifestError, ModelMismatchError):
        assert issubclass(error, GuardError)
