"""Every correction to moto the local endpoint makes, in the order it applies them. Each is a
named function whose docstring cites the AWS behaviour it follows; the package README has the
table. Numbers are the corrections' names in comments and docs across the repository:

   1  iot_certificates.correct_create_certificate_from_csr   CSR's key and subject, checks
   1b iot_certificates.correct_set_as_active                 setAsActive=false means INACTIVE
   2  iot_certificates.correct_certificate_ids               id = SHA-256 of the DER
   3  iot_certificates.correct_certificate_validity          the certificate's own validity
   4  iot_endpoint.correct_describe_endpoint                 one endpoint per account/region
   5  iot_listing.correct_list_certificates                  pageSize, marker, order
   6  iot_locking.correct_certificate_lookups                O(1) certificate lookups
      iot_locking.correct_thread_safety                      backend state under one lock
   7  iam.correct_aws_managed_policies                       AWS managed IAM policies exist
   8  provisioning_templates.install                         the template operations
   9  iot_certificates.correct_create_keys_and_certificate   issued by the (test) CA
  10  lambda_code.correct_get_function_code                  GetFunction's Code.Location
  11  iot_things.correct_exclusive_thing_associations        EXCLUSIVE_THING associations
"""

from __future__ import annotations

from endpoint import iam, iot_certificates, iot_endpoint, iot_listing, iot_locking, iot_things
from endpoint import lambda_code, provisioning_templates
from endpoint.ca import TestCa
from endpoint.faults import FaultSettings


def apply_iot_corrections(ca: TestCa, faults: FaultSettings) -> None:
    """The corrections to moto's IoT backend and responses (and IAM's managed policies); call
    once, before serving. `faults` carries the test switches that depart from AWS on purpose
    (here: drop_csr_subject). Thread safety comes last: it locks the methods the others
    replaced."""
    iot_certificates.correct_certificate_ids()
    iam.correct_aws_managed_policies()
    iot_certificates.correct_create_certificate_from_csr(ca, faults)
    iot_certificates.correct_set_as_active()
    iot_certificates.correct_create_keys_and_certificate(ca)
    iot_certificates.correct_certificate_validity()
    iot_endpoint.correct_describe_endpoint()
    iot_listing.correct_list_certificates()
    iot_things.correct_exclusive_thing_associations()
    iot_locking.correct_certificate_lookups()
    iot_locking.correct_thread_safety()


def apply_all(ca: TestCa, faults: FaultSettings, data_plane: bool) -> None:
    """All corrections: IoT's, the provisioning templates, and with the data plane (whose
    pre-provisioning hooks fetch their code) Lambda's GetFunction."""
    apply_iot_corrections(ca, faults)
    provisioning_templates.install()
    if data_plane:
        lambda_code.correct_get_function_code()
