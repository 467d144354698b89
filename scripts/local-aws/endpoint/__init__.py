"""The local AWS control plane: moto, pinned, with the corrections that make it answer as AWS
IoT does (see ../README.md for the table), the test CA, fault injection and request routing."""
