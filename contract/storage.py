"""Names of where a run's files may live and of the environment that reaches them, defined once.

Standard library only: the runners, the Kubeflow compiler and the tests read it without TFX.
"""

# Object stores every pod of a Kubeflow run can reach (pods share no filesystem). gs:// is
# TensorFlow's own; s3:// (AWS S3, MinIO, any S3-protocol server) comes from tensorflow-io for
# tf.io.gfile and from apache_beam.io.aws (boto3) for Beam.
GCS_SCHEME = 'gs://'
S3_SCHEME = 's3://'
OBJECT_STORE_SCHEMES = (GCS_SCHEME, S3_SCHEME)

# Where the local and Beam runners put the pipeline root and the push directory when these are
# not under $PLAYRECALL_HOME (e.g. s3://BUCKET/playrecall/root); the Kubeflow compiler reads the
# same variables as defaults of its flags. Metadata stays local (a SQLite file) either way.
PIPELINE_ROOT_ENV = 'PLAYRECALL_PIPELINE_ROOT'
SERVING_MODEL_DIR_ENV = 'PLAYRECALL_SERVING_MODEL_DIR'

# The standard AWS variables, read by boto3 (Beam's S3 file system) and by the AWS C++ SDK inside
# tensorflow-io. An S3-protocol server other than AWS (MinIO) is named by its endpoint URL,
# e.g. http://minio-service.kubeflow:9000: boto3 reads AWS_ENDPOINT_URL, tensorflow-io reads
# S3_ENDPOINT (a URL with its scheme; without one it speaks https). Either one is enough here:
# storage.register_filesystems() copies it to the other when that is unset. tensorflow-io always
# addresses buckets by path (http://host/bucket/key), which MinIO needs.
ACCESS_KEY_ID_ENV = 'AWS_ACCESS_KEY_ID'
SECRET_ACCESS_KEY_ENV = 'AWS_SECRET_ACCESS_KEY'
# The region, which every request is signed with: boto3 reads AWS_DEFAULT_REGION, the AWS C++ SDK
# one or the other by version; either is enough here, as with the endpoint.
REGION_ENV = 'AWS_REGION'
BOTO_REGION_ENV = 'AWS_DEFAULT_REGION'
BOTO_ENDPOINT_ENV = 'AWS_ENDPOINT_URL'
TFIO_ENDPOINT_ENV = 'S3_ENDPOINT'
# tensorflow-io: '0' skips TLS certificate checks (a self-signed MinIO); TLS itself follows the
# endpoint's scheme.
TFIO_VERIFY_SSL_ENV = 'S3_VERIFY_SSL'

# The Kubernetes Secret a standalone Kubeflow Pipelines install keeps its MinIO credentials in
# (namespace kubeflow), its keys, and the MinIO service its pods reach: the defaults of the
# Kubeflow compiler's --s3_* flags (docs/kubeflow.md).
KFP_MINIO_SECRET = 'mlpipeline-minio-artifact'
KFP_MINIO_ACCESS_KEY = 'accesskey'
KFP_MINIO_SECRET_KEY = 'secretkey'
KFP_MINIO_ENDPOINT = 'http://minio-service.kubeflow:9000'
# MinIO ignores the region, but the AWS SDKs sign every request with one.
DEFAULT_REGION = 'us-east-1'
