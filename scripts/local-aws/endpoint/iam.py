"""Correction 7, to moto's IAM backend."""

from __future__ import annotations

from moto.core.config import default_user_config


def correct_aws_managed_policies() -> None:
    """7. AWS managed IAM policies. AWS: managed policies such as
    arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration exist in every account and
    can be attached (AttachRolePolicy). moto loads them only on request."""
    default_user_config.setdefault("iam", {})["load_aws_managed_policies"] = True
