"""What each speed lever buys on one model, measured side by side in one run (ONNX Runtime ``session.run`` alone).

    python -m benchmarks.levers --bundle .cache/demo/bundle --checkpoint .cache/demo/run/model \
        --student .cache/benchmarks/students/L3/bundle --student .cache/benchmarks/students/L2/bundle

Levers: session options (thread spinning, the SkipLayerNormalization fusion), IO binding, int8 settings
(per-channel or not, reduce_range, uint8 weights, fused or plain graph; each with its drift from fp32 on real texts),
threads, and smaller students (fewer layers, their own validation metrics from the manifest). Timings are of one
window of the given lengths.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    CACHE,
    RESULTS,
    Engine,
    bundle_model_kind,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    time_interleaved,
    write_json,
)


def int8_variants(fp32: Path, plain_fp32: Path | None, folder: Path) -> dict[str, Path]:
    """The fused fp32 model quantized with each int8 setting (cached)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings: dict[str, tuple[Path, dict[str, Any]]] = {
        "int8 per-channel (shipped)": (fp32, {"per_channel": True}),
        "int8 per-tensor": (fp32, {"per_channel": False}),
        "int8 per-channel reduce_range": (fp32, {"per_channel": True, "reduce_range": True}),
        "int8 uint8 weights": (fp32, {"per_channel": False, "weight_type": QuantType.QUInt8}),
    }
    if plain_fp32 is not None:
        settings["int8 per-channel, unfused graph"] = (plain_fp32, {"per_channel": True})
    out = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (source, options) in settings.items():
        target = folder / (name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "") + ".onnx")
        if not target.is_file():
            log(f"quantizing: {name}")
            quantize_dynamic(
                str(source),
                str(target),
                **{"weight_type": QuantType.QInt8, **options},
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        out[name] = target
    return out


def session(model: Path, threads: int, spinning: bool = True, skip_layer_norm_fusion: bool = True):
    """ONNX Runtime's defaults (every fusion, spinning pool threads) unless a lever turns one off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    disabled = [] if skip_layer_norm_fusion else ["SkipLayerNormFusion"]
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )


def feeds_for(tokenizer_file: Path, texts: Sequence[str], session: Any, max_length: int) -> list[dict[str, Any]]:
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    out = []
    for text in texts:
        ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        out.append({i.name: feeds[i.name] for i in session.get_inputs()})
    return out


def io_bound_call(sess: Any, feeds: list[dict[str, Any]]):
    """IO binding: inputs bound as OrtValues, the output written into a preallocated array."""
    import numpy as np
    import onnxruntime as ort

    n_out = sess.get_outputs()[0].shape[-1]
    bindings = []
    for f in feeds:
        binding = sess.io_binding()
        for name, value in f.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        out = np.empty((1, n_out), dtype=np.float32)
        binding.bind_output(sess.get_outputs()[0].name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        bindings.append((binding, out))

    def call(i: int) -> object:
        binding, out = bindings[i % len(bindings)]
        sess.run_with_iobinding(binding)
        return out

    return call


def drift(reference: Any, candidate: Any, feeds: list[dict[str, Any]]) -> dict[str, float]:
    import numpy as np

    def probs(s: Any) -> np.ndarray:
        return np.concatenate([1 / (1 + np.exp(-s.run(None, f)[0])) for f in feeds])

    d = np.abs(probs(candidate) - probs(reference))
    return {"max_abs_dprob": round(float(d.max()), 4), "mean_abs_dprob": round(float(d.mean()), 5)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the bundle's checkpoint (fp32 and int8 variants)"
    )
    parser.add_argument("--student", type=Path, action="append", default=[], help="smaller bundles of the same task")
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--min-reps", type=int, default=50)
    parser.add_argument("--max-reps", type=int, default=400)
    parser.add_argument("--budget-s", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from builder.export.onnx import export_fused_fp32
    from guard_sdk import GuardBundle

    bundle = GuardBundle.load(args.bundle)
    manifest = bundle.manifest
    work = CACHE / "levers" / f"{manifest.name}-{manifest.files[manifest.model.file][:12]}"
    fp32 = work / "onnx" / "model_optimized.onnx"
    if not fp32.is_file():
        export_fused_fp32(args.checkpoint, work / "onnx", kind=bundle_model_kind(manifest))
    models = {"fp32 fused": fp32, **int8_variants(fp32, work / "onnx" / "model.onnx", work)}
    students = {f"student {GuardBundle.load(s).manifest.id} int8": s for s in args.student}
    tokenizer_file = bundle.file(manifest.tokenizer.file)
    pool = corpus()
    drift_texts = texts_of_length(tokenizer_file, pool, 64, 64, seed=1) + texts_of_length(
        tokenizer_file, pool, 128, 32, seed=2
    )
    reference = session(fp32, 2)
    drift_feeds = feeds_for(tokenizer_file, drift_texts, reference, manifest.tokenizer.max_length)
    drifts = {
        name: drift(reference, session(path, 2), drift_feeds) for name, path in models.items() if name != "fp32 fused"
    }

    rows = []
    for threads in args.threads:
        for tokens in args.tokens:
            texts = texts_of_length(tokenizer_file, pool, tokens, 16, seed=tokens)
            engines = []
            for name, path in models.items():
                s = session(path, threads)
                feeds = feeds_for(tokenizer_file, texts, s, tokens)
                engines.append(Engine(name, lambda i, s=s, f=feeds: s.run(None, f[i % len(f)])))
                if name == "int8 per-channel (shipped)":
                    quiet = session(path, threads, spinning=False)
                    engines.append(
                        Engine("  + no thread spinning", lambda i, s=quiet, f=feeds: s.run(None, f[i % len(f)]))
                    )
                    engines.append(Engine("  + IO binding", io_bound_call(s, feeds)))
                    unfused = session(path, threads, skip_layer_norm_fusion=False)
                    engines.append(
                        Engine("  + no SkipLayerNorm fusion", lambda i, s=unfused, f=feeds: s.run(None, f[i % len(f)]))
                    )
            for name, folder in students.items():
                sb = GuardBundle.load(folder)
                s = session(sb.model_path(), threads)
                feeds = feeds_for(sb.file(sb.manifest.tokenizer.file), texts, s, tokens)
                engines.append(Engine(name, lambda i, s=s, f=feeds: s.run(None, f[i % len(f)])))
            log(f"levers: {tokens} tokens, {threads} thread(s)")
            stats = time_interleaved(
                engines, warmup=5, min_reps=args.min_reps, max_reps=args.max_reps, budget_s=args.budget_s
            )
            rows += [{"tokens": tokens, "threads": threads, "lever": k, **vars(v)} for k, v in stats.items()]

    student_metrics = {}
    for name, folder in students.items():
        m = GuardBundle.load(folder).manifest
        student_metrics[name] = {
            "layers": m.training.num_layers,
            **_validation_and_parity(m),
        }
    student_metrics[f"shipped {manifest.id}"] = {
        "layers": manifest.training.num_layers or 6,
        **_validation_and_parity(manifest),
    }
    result = {
        "bundle": manifest.id,
        "machine": machine_info(args.threads),
        "levers": rows,
        "drift_vs_fp32": drifts,
        "students": student_metrics,
    }
    write_json(args.out / "levers.json", result)
    text = markdown(result)
    (args.out / "levers.md").write_text(text + "\n")
    print(text)
    return result


def _validation_and_parity(manifest: Any) -> dict[str, Any]:
    """A bundle's validation metrics per label and its parity report, as plain dicts (None when not recorded)."""
    metrics = manifest.metrics
    return {
        "validation": {label: m.model_dump() for label, m in metrics.validation.items()}
        if metrics.validation
        else None,
        "parity": metrics.parity.model_dump() if metrics.parity else None,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"# Speed levers on {result['bundle']} (session.run alone, one window)",
        "",
        (
            f"{m['cpu']} ({', '.join(m['cpu_flags'])}), load average "
            f"{', '.join(f'{x:.2f}' for x in m['load_average_1_5_15'])} at the start, onnxruntime {m['onnxruntime']}. "
            "Timed round-robin in one run; × = p50 ratio to the shipped int8."
        ),
        "",
    ]
    for threads in dict.fromkeys(r["threads"] for r in result["levers"]):
        for tokens in dict.fromkeys(r["tokens"] for r in result["levers"]):
            rows = [r for r in result["levers"] if r["threads"] == threads and r["tokens"] == tokens]
            base = next(r for r in rows if r["lever"] == "int8 per-channel (shipped)")["p50"]
            out += [f"## {tokens} tokens, {threads} thread(s)", ""]
            out += [
                markdown_table(
                    ["lever", "p50 ms", "p95 ms", "p99 ms", "×"],
                    [[r["lever"], r["p50"], r["p95"], r["p99"], round(r["p50"] / base, 2)] for r in rows],
                ),
                "",
            ]
    out += ["## int8 drift from fp32 (sigmoid probabilities, 96 real texts of 64 and 128 tokens)", ""]
    out += [
        markdown_table(
            ["model", "max |Δprob|", "mean |Δprob|"],
            [[k, v["max_abs_dprob"], v["mean_abs_dprob"]] for k, v in result["drift_vs_fp32"].items()],
        ),
        "",
    ]
    out += ["## Students: validation metrics at their calibrated thresholds", ""]
    table = []
    for name, s in result["students"].items():
        for label, v in (s["validation"] or {}).items():
            table.append(
                [name, s["layers"], label, v["f1"], v["auprc"], v["fpr"], (s["parity"] or {}).get("int8_max_abs_diff")]
            )
    out += [markdown_table(["model", "layers", "label", "F1", "AUPRC", "FPR", "int8 max |Δprob| vs torch"], table), ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
