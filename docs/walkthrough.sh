#!/usr/bin/env bash
# The README's curl examples as one runnable script, against a running stack (`make run`):
#   URL=http://127.0.0.1:8000 TOKEN=<admin token printed by make run> bash docs/walkthrough.sh
# Needs curl and jq; trains a small scikit-learn model with the project's .venv.
set -euo pipefail
URL=${URL:-http://127.0.0.1:8000}
: "${TOKEN:?set TOKEN to the admin token that make run printed}"
AUTH=(-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
say() { printf '\n### %s\n' "$*"; }
call() { curl -fsS "${AUTH[@]}" "$@"; }

say "health and the OpenAPI document (no token needed)"
curl -fsS "$URL/health"; echo
curl -fsS "$URL/openapi.json" | jq '.paths | keys | length'

say "API keys: a writer key for the ml group"
WRITER=$(call -X POST "$URL/auth/keys" \
  -d '{"principal": "alice", "roles": ["writer"], "groups": ["ml"]}' | jq -r .token)
curl -fsS -H "Authorization: Bearer $WRITER" "$URL/auth/whoami"; echo

say "model registry: a model and two skops versions"
MODEL=$(call -X POST "$URL/models" -d '{"name": "churn-'"$RANDOM"'"}' | jq -r .model_id)
for C in 0.1 10; do
  ARTIFACT=$(.venv/bin/python -c "
import base64, skops.io as sio
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
X, y = load_breast_cancer(return_X_y=True)
print(base64.b64encode(sio.dumps(LogisticRegression(C=$C, max_iter=5000).fit(X[:, :4], y))).decode())")
  jq -n --arg a "$ARTIFACT" '{artifact_base64: $a, format: "skops", task: "classification",
      feature_names: ["radius", "texture", "perimeter", "area"], class_names: ["malignant", "benign"],
      background_sample: [[14.1, 19.3, 92.0, 655.0], [12.0, 17.9, 77.6, 440.0], [20.6, 29.3, 140.1, 1265.0]]}' \
    | call -X POST "$URL/models/$MODEL/versions" -d @- | jq '{version, stage, artifact_sha256}'
done
call -X POST "$URL/models/$MODEL/versions/1/stage" -d '{"stage": "production"}' | jq '{version, stage}'

say "A/B test: create, start, route, record outcomes, analyse"
EXP=$(call -X POST "$URL/experiments" -d '{
  "name": "churn-v2-'"$RANDOM"'", "allocation_strategy": "percentage",
  "variants": [
    {"variant_id": "control", "model_id": "'"$MODEL"'", "model_version": 1, "traffic_weight": "0.5", "is_control": true},
    {"variant_id": "treatment", "model_id": "'"$MODEL"'", "model_version": 2, "traffic_weight": "0.5"}],
  "analysis": {"method": "sequential", "minimum_detectable_effect": 0.1, "power": 0.8,
               "tuning_sample_size": 5000}}' \
  | jq -r .experiment_id)
call -X POST "$URL/experiments/$EXP/start" | jq -r .status
call -X POST "$URL/experiments/$EXP/route" -d '{"request_id": "req-1", "user_id": "user-42"}' | jq -c .
call "$URL/experiments/$EXP/routing-config" | jq -c '{revision, phase, variants: [.variants[] | {variant_id, weight}]}'
call -X POST "$URL/experiments/$EXP/outcomes" -d '{"outcomes": [
  {"variant_id": "control", "request_id": "req-1", "success": true, "latency_ms": 41.5, "converted": false, "phase": 0},
  {"variant_id": "treatment", "request_id": "req-2", "success": true, "latency_ms": 38.0, "converted": true, "phase": 0}]}' | jq -c .
call "$URL/experiments/$EXP/metrics" | jq -c '.variants | map({variant_id, request_count, conversion_rate})'
call "$URL/experiments/$EXP/analysis" | jq -c '{recommendation, method, reason}'
call "$URL/experiments/$EXP/analysis?method=fixed" | jq -c '{recommendation, method, reason}'
call "$URL/stats/sample-size?baseline_rate=0.1&minimum_detectable_effect=0.1&daily_traffic=5000" | jq -c '{per_variant, total, days, analysis_method}'
call -X POST "$URL/experiments/$EXP/conclude" -d '{}' | jq -c '{status, winning_variant_id, conclusion_reason}'
call "$URL/models/$MODEL" | jq -c '{production_version}'

say "a canary judged by the monitor (its checks, then the stored reason if it failed)"
CANARY=$(call -X POST "$URL/experiments" -d '{"name": "ranker v2 canary '"$RANDOM"'", "primary_metric": "success_rate",
  "variants": [
    {"variant_id": "control", "model_id": "'"$MODEL"'", "model_version": 1, "traffic_weight": "0.9", "is_control": true},
    {"variant_id": "canary", "model_id": "'"$MODEL"'", "model_version": 2, "traffic_weight": "0.1"}]}' | jq -r .experiment_id)
call -X PUT "$URL/experiments/$CANARY/rollback-policy" -d '{"error_rate_tolerance": 0.2,
  "latency_degradation_threshold": 0.2, "min_requests_before_rollback": 100, "failure_limit": 2}' | jq -c .
call -X POST "$URL/experiments/$CANARY/start" | jq -r .status
call "$URL/experiments/$CANARY/checks" | jq -c '{latest, failure_limit}'
call "$URL/experiments/$CANARY" | jq -c '{status, rollback_reason}'

say "datasets: inline version, presigned upload through the S3 trigger, transformation, lineage"
DS=$(call -X POST "$URL/datasets" -d '{"name": "cells-'"$RANDOM"'", "format": "csv", "access_groups": ["ml"]}' \
  | jq -r .dataset_id)
V1=$(call -X POST "$URL/datasets/$DS/versions" \
  -d '{"data": "id,radius,label\n1,14.1,0\n2,12.0,1\n3,20.6,0\n4,11.2,1\n"}' | jq -r .version_id)
UPLOAD=$(call -X POST "$URL/datasets/$DS/uploads" -d '{"filename": "more.csv"}')
printf 'id,radius,label\n1,14.1,0\n2,12.0,1\n3,20.6,0\n4,11.2,1\n5,13.3,1\n' > /tmp/more.csv
curl -fsS --upload-file /tmp/more.csv "$(jq -r .url <<<"$UPLOAD")"  # a plain PUT of the file
for _ in $(seq 1 30); do  # the S3 trigger creates version 2 within a second or two
  [ "$(call "$URL/datasets/$DS/versions" | jq '.versions | length')" -ge 2 ] && break; sleep 1
done
call "$URL/datasets/$DS/versions" | jq -c '.versions | map({version_number, row_count, sha256})'
call "$URL/datasets/$DS/compare?a=1&b=2" | jq -c '{row_count, same_content}'
# Declaring the SHA-256 sends new content straight to its content address: one PUT that S3
# verifies (send exactly the returned headers), versioned in place; known content is not re-sent.
printf 'id,radius,label\n%s,15.0,0\n' "$RANDOM$RANDOM" > /tmp/direct.csv
SHA=$(sha256sum /tmp/direct.csv | cut -d' ' -f1)
UPLOAD=$(call -X POST "$URL/datasets/$DS/uploads" -d '{"filename": "direct.csv", "sha256": "'"$SHA"'"}')
mapfile -t SIGNED < <(jq -r '.headers | to_entries[] | "-H", "\(.key): \(.value)"' <<<"$UPLOAD")
curl -fsS --upload-file /tmp/direct.csv "${SIGNED[@]}" "$(jq -r .url <<<"$UPLOAD")"
for _ in $(seq 1 30); do
  [ "$(call "$URL/datasets/$DS/versions" | jq '.versions | length')" -ge 3 ] && break; sleep 1
done
call -X POST "$URL/datasets/$DS/uploads" -d '{"filename": "again.csv", "sha256": "'"$SHA"'"}' \
  | jq -c '{status, version_id}'  # "exists": nothing to upload
OUT=$(call -X POST "$URL/datasets/$DS/transformations" -d '{
  "transformation": {"type": "filter", "predicates": [{"column": "radius", "op": "lt", "value": 15}]},
  "source_version_ids": ["'"$V1"'"]}')
NEW=$(jq -r '.outputs | to_entries[0].value.version_id' <<<"$OUT")
call "$URL/lineage/$NEW?direction=upstream&max_depth=5" | jq -c .
call "$URL/versions/$NEW/reproducibility" | jq -c .
call -X POST "$URL/datasets/$DS/versions/1/usages" -d '{"experiment_id": "'"$EXP"'"}' | jq -c .
call "$URL/datasets/$DS/reconstruct?experiment_id=$EXP" | jq -c .

say "explanations: SHAP and LIME of the production model, then global importance"
ROW='{"radius": 14.1, "texture": 19.3, "perimeter": 92.0, "area": 655.0}'
call -X POST "$URL/explanations" -d '{"model_id": "'"$MODEL"'", "explanation_type": "shap", "input_data": '"$ROW"'}' \
  | jq -c '{algorithm, base_prediction, actual_prediction, additivity_error, cached}'
call -X POST "$URL/explanations" -d '{"model_id": "'"$MODEL"'", "explanation_type": "lime",
  "num_samples": 1000, "seed": 7, "input_data": '"$ROW"'}' | jq -c '{local_fidelity, explained_class, cached}'
call -X POST "$URL/explanations/global" -d '{"model_id": "'"$MODEL"'", "aggregation_method": "mean",
  "inputs": ['"$ROW"', {"radius": 20.6, "texture": 29.3, "perimeter": 140.1, "area": 1265.0}]}' \
  | jq -c '{feature_importances, stability}'

say "explanations of a text model: words as features (SHAP), one text and globally"
TEXT_MODEL=$(call -X POST "$URL/models" -d '{"name": "reviews-'"$RANDOM"'"}' | jq -r .model_id)
ARTIFACT=$(.venv/bin/python -c "
import base64, skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
texts = ['excellent fun', 'an excellent story', 'awful bore', 'an awful plot'] * 5
model = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10)).fit(texts, [1, 1, 0, 0] * 5)
print(base64.b64encode(sio.dumps(model)).decode())")
jq -n --arg a "$ARTIFACT" '{artifact_base64: $a, format: "skops", task: "text_classification",
    class_names: ["neg", "pos"]}' | call -X POST "$URL/models/$TEXT_MODEL/versions" -d @- | jq -c '{version}'
call -X POST "$URL/explanations" -d '{"model_id": "'"$TEXT_MODEL"'", "model_version": 1,
  "explanation_type": "shap", "max_evals": 200, "input_data": {"text": "an excellent, gripping story"}}' \
  | jq -c '{algorithm, explained_class, top_positive_features, additivity_error}'
call -X POST "$URL/explanations/global" -d '{"model_id": "'"$TEXT_MODEL"'", "model_version": 1,
  "max_evals": 100, "top_k": 2, "inputs": [{"text": "the excellent show"}, {"text": "the awful show"}]}' \
  | jq -c '{feature_importances}'
call "$URL/explanations/cache/stats" | jq -c .
echo
echo "walkthrough complete"
