#!/usr/bin/env bash
# make deploy STAGE=prod — deploys SynapseNet to the AWS account of the current credentials.
#
# Needs: AWS CLI v2 with credentials (aws configure / aws sso login / AWS_PROFILE) allowed to use
# CloudFormation, IAM, Lambda, API Gateway, DynamoDB, S3, SQS, EventBridge, ECR and CloudWatch
# Logs; AWS_REGION; a running Docker engine (the explanation function is a container image).
#
# Steps (each printed before it runs; DRY_RUN=1 prints them without running after the checks):
#   1. check the tools and the credentials (fails fast, before anything is built);
#   2. make sure the ECR repository and the artifact bucket exist (creates them if missing);
#   3. build the package and template: python -m infra.package --stage $STAGE --lint;
#   4. build the explainer image (layers/explainer/Dockerfile) and push it to ECR;
#   5. aws cloudformation package (uploads dist/deployment.zip) and aws cloudformation deploy,
#      passing the image URI and globally unique bucket names;
#   6. print the stack outputs (EndpointURL, bucket names, queue URLs) and how to issue the
#      first admin API key (python -m infra.admin_key).
#
# Variables: STAGE (prod), AWS_REGION, STACK_NAME (synapsenet-$STAGE), ECR_REPOSITORY
# (synapsenet-explainer), ARTIFACT_BUCKET (synapsenet-artifacts-<account>-<region>),
# DATA_BUCKET_NAME / MODELS_BUCKET_NAME (synapse-$STAGE-data|models-<account>), IMAGE_TAG
# (git commit), PYTHON (.venv/bin/python), DRY_RUN.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE="${STAGE:-prod}"
PYTHON="${PYTHON:-.venv/bin/python}"
DRY_RUN="${DRY_RUN:-}"

die() {
    echo "deploy: $*" >&2
    exit 1
}

run() {
    echo "+ $*"
    if [ -z "$DRY_RUN" ]; then "$@"; fi
}

command -v aws >/dev/null 2>&1 \
    || die "the AWS CLI v2 is required: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}"
[ -n "$REGION" ] || die "no AWS region: export AWS_REGION=<region> (e.g. eu-west-1)"
export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
if ! ACCOUNT="$(aws sts get-caller-identity --query Account --output text 2>/dev/null)" \
    || [ -z "$ACCOUNT" ] || [ "$ACCOUNT" = "None" ]; then
    die "no usable AWS credentials (aws sts get-caller-identity failed): run 'aws configure', 'aws sso login' or export AWS_PROFILE / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY"
fi
command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
    || die "a running Docker engine is required to build the explainer image (layers/explainer/Dockerfile)"
if [ ! -x "$PYTHON" ]; then run make venv; fi

STACK_NAME="${STACK_NAME:-synapsenet-$STAGE}"
ECR_REPOSITORY="${ECR_REPOSITORY:-synapsenet-explainer}"
ARTIFACT_BUCKET="${ARTIFACT_BUCKET:-synapsenet-artifacts-$ACCOUNT-$REGION}"
DATA_BUCKET_NAME="${DATA_BUCKET_NAME:-synapse-$STAGE-data-$ACCOUNT}"
MODELS_BUCKET_NAME="${MODELS_BUCKET_NAME:-synapse-$STAGE-models-$ACCOUNT}"
IMAGE_TAG="${IMAGE_TAG:-$(git rev-parse --short=12 HEAD 2>/dev/null || date +%Y%m%d%H%M%S)}"
REGISTRY="$ACCOUNT.dkr.ecr.$REGION.amazonaws.com"
IMAGE_URI="$REGISTRY/$ECR_REPOSITORY:$IMAGE_TAG"
echo "deploy: stage $STAGE, stack $STACK_NAME, account $ACCOUNT, region $REGION"

# 2. Registry and artifact bucket.
if ! aws ecr describe-repositories --repository-names "$ECR_REPOSITORY" >/dev/null 2>&1; then
    run aws ecr create-repository --repository-name "$ECR_REPOSITORY" \
        --image-scanning-configuration scanOnPush=true --image-tag-mutability MUTABLE
fi
if ! aws s3api head-bucket --bucket "$ARTIFACT_BUCKET" >/dev/null 2>&1; then
    run aws s3 mb "s3://$ARTIFACT_BUCKET"
    run aws s3api put-public-access-block --bucket "$ARTIFACT_BUCKET" \
        --public-access-block-configuration \
        BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
fi

# 3. Zip package and template (sizes are printed; fails if over the Lambda limits or not lint-clean).
run "$PYTHON" -m infra.package --stage "$STAGE" --out dist --lint

# 4. The explanation function's image. --provenance=false: Lambda accepts a plain image manifest,
#    not the index BuildKit creates for provenance attestations.
if [ -z "$DRY_RUN" ]; then
    aws ecr get-login-password | docker login --username AWS --password-stdin "$REGISTRY"
else
    echo "+ aws ecr get-login-password | docker login --username AWS --password-stdin $REGISTRY"
fi
run docker build --platform linux/amd64 --provenance=false \
    -f layers/explainer/Dockerfile -t "$IMAGE_URI" .
run docker push "$IMAGE_URI"

# 5. Upload the zip and deploy (the SAM transform runs inside CloudFormation).
run aws cloudformation package --template-file dist/template.json \
    --s3-bucket "$ARTIFACT_BUCKET" --s3-prefix "$STACK_NAME" \
    --output-template-file dist/packaged.yaml
run aws cloudformation deploy --template-file dist/packaged.yaml --stack-name "$STACK_NAME" \
    --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
    --parameter-overrides \
    "ExplainerImageUri=$IMAGE_URI" \
    "DataBucketName=$DATA_BUCKET_NAME" \
    "ModelsBucketName=$MODELS_BUCKET_NAME"

# 6. Where it is.
run aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
    --query "Stacks[0].Outputs" --output table
echo "deploy: done. First admin API key (once per stack):"
echo "  AWS_REGION=$REGION $PYTHON -m infra.admin_key --stage $STAGE --principal <you@example.com>"
