"""k8s/tfjob.yaml against the TFJob CRD's OpenAPI schema and the core Kubernetes pod schema.

No Kubernetes cluster runs here: everything up to the API call is checked. The CRD (kubeflow.org/v1,
from the training operator) is in tests/testdata/k8s-schemas with its source. The API
server prunes fields a structural schema does not declare; kubectl's strict validation rejects
them. The strict validator below does the same, so a misspelt field fails here too.
"""

import copy
import os

import jsonschema
import kubernetes_validate
import pytest
import yaml

from contract import settings
from trainer import flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TFJOB_PATH = os.path.join(REPO_ROOT, 'k8s', 'tfjob.yaml')
CRD_PATH = os.path.join(REPO_ROOT, 'tests', 'testdata', 'k8s-schemas', 'kubeflow.org_tfjobs.yaml')
KUBERNETES_VERSION = '1.31.0'
ROLES = ('Chief', 'Worker', 'PS')


def _strict(schema):
  """The schema with undeclared fields forbidden wherever the API server would prune them."""
  if isinstance(schema, dict):
    schema = {key: _strict(value) for key, value in schema.items()}
    if ('properties' in schema and 'additionalProperties' not in schema
        and not schema.get('x-kubernetes-preserve-unknown-fields')):
      schema['additionalProperties'] = False
    return schema
  if isinstance(schema, list):
    return [_strict(value) for value in schema]
  return schema


@pytest.fixture(scope='module')
def validator():
  with open(CRD_PATH) as f:
    crd = yaml.safe_load(f)
  assert crd['spec']['names']['kind'] == 'TFJob'
  [version] = [v for v in crd['spec']['versions'] if v['name'] == 'v1']
  schema = _strict(version['schema']['openAPIV3Schema'])
  validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
  validator_class.check_schema(schema)
  return validator_class(schema)


@pytest.fixture()
def tfjob():
  with open(TFJOB_PATH) as f:
    [document] = [d for d in yaml.safe_load_all(f) if d]
  return document


def _errors(validator, document):
  return sorted(error.message for error in validator.iter_errors(document))


def test_tfjob_validates_against_the_crd_schema(validator, tfjob):
  assert (tfjob['apiVersion'], tfjob['kind']) == ('kubeflow.org/v1', 'TFJob')
  assert _errors(validator, tfjob) == []


@pytest.mark.parametrize('break_it, expected', [
    (lambda job: job['spec']['tfReplicaSpecs']['Worker'].update(replicas='two'), "'two' is not of type 'integer'"),
    (lambda job: job['spec'].update(tfReplicaSpec=job['spec'].pop('tfReplicaSpecs')), 'tfReplicaSpecs'),
    (lambda job: job['spec']['runPolicy'].update(cleanPodPolicyy='All'), 'cleanPodPolicyy'),
    (lambda job: job['spec']['tfReplicaSpecs']['PS']['template']['spec']['containers'][0]
     ['resources'].update(limits={'memory': '16 gigabytes'}), '16 gigabytes'),
], ids=['replicas_not_an_integer', 'misspelt_tfReplicaSpecs', 'unknown_runPolicy_field',
        'bad_memory_quantity'])
def test_a_broken_tfjob_fails_the_schema(validator, tfjob, break_it, expected):
  broken = copy.deepcopy(tfjob)
  break_it(broken)
  errors = _errors(validator, broken)
  assert errors and any(expected in error for error in errors), errors


@pytest.mark.parametrize('role', ROLES)
def test_pod_templates_validate_against_the_core_kubernetes_schema(tfjob, role):
  template = tfjob['spec']['tfReplicaSpecs'][role]['template']
  pod_template = {'apiVersion': 'v1', 'kind': 'PodTemplate', 'metadata': {'name': role.lower()},
                  'template': template}
  kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_pod_field_fails_the_core_schema(tfjob):
  template = copy.deepcopy(tfjob['spec']['tfReplicaSpecs']['Worker']['template'])
  template['spec']['containers'][0]['comand'] = ['python']
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate({'apiVersion': 'v1', 'kind': 'PodTemplate',
                                  'metadata': {'name': 'worker'}, 'template': template},
                                 KUBERNETES_VERSION, strict=True)


def test_every_role_runs_the_trainer_command_with_valid_flags(tfjob):
  specs = tfjob['spec']['tfReplicaSpecs']
  assert set(specs) == set(ROLES)
  assert specs['Chief']['replicas'] == 1
  for role in ROLES:
    # The operator writes TF_CONFIG into the container named 'tensorflow' only.
    [container] = [c for c in specs[role]['template']['spec']['containers']
                   if c['name'] == 'tensorflow']
    assert 'image' not in container  # the launcher sets the pipeline image, by digest
    assert container['command'] == ['python', '-m', 'trainer.run']
    env = {e['name']: e['value'] for e in container['env']}
    assert env['TF_USE_LEGACY_KERAS'] == '1' and env['GRPC_FAIL_FAST'] == 'use_caller'
    assert container['resources']['limits'] and container['resources']['requests']
    # The chief's flags parse and name valid hyper-parameters; all roles get the same flags.
    fn_args = flags.fn_args_from_argv(container['args'])
    hparams = settings.HParams.from_dict(fn_args.custom_config['hparams'])
    assert hparams.num_shards == specs['PS']['replicas']


def test_servers_are_stopped_when_the_chief_finishes(tfjob):
  # Workers and parameter servers never exit by themselves.
  assert tfjob['spec']['runPolicy']['cleanPodPolicy'] in ('Running', 'All')
