"""Correction 8: AWS IoT provisioning templates for the local endpoint (moto 5.2.5 has none).

This package owns:
  * the nine provisioning-template operations of the AWS IoT API, answered by moto's server:
    CreateProvisioningTemplate, DescribeProvisioningTemplate, ListProvisioningTemplates,
    UpdateProvisioningTemplate, DeleteProvisioningTemplate, CreateProvisioningTemplateVersion,
    DescribeProvisioningTemplateVersion, ListProvisioningTemplateVersions and
    DeleteProvisioningTemplateVersion, with the request/response fields, REST bindings and
    error types (HTTP status codes) of botocore's AWS IoT service model and the API reference
    (checks.py: the constraints; backend.py: the state and the operations; responses.py: the
    REST bindings);
  * their state: one dict per moto IoT backend (so per account and region), attached lazily to
    the backend instance as the attribute backend.STATE_ATTR. moto's reset (POST
    /moto-api/reset) rebuilds every backend's __dict__, which drops it too.

moto's IoTResponse resolves the operation from the botocore model by HTTP method and path
(moto.core.routing) and then calls the response method named after the operation in
snake_case (moto/iot/urls.py sends every IoT path to IoTResponse.dispatch), so install() only
has to add those methods to IoTResponse and the backing state methods to IoTBackend.

Call install() once, before serving. Every read and write of the template state runs under
the IoT backend's STATE_LOCK (endpoint/iot_locking.py).
"""

from __future__ import annotations


def install() -> None:
    """8. Adds the provisioning-template operations to moto's IoTBackend and IoTResponse."""
    from endpoint.provisioning_templates import backend, responses

    backend.install()
    responses.install()
