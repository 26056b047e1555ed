"""The API's pydantic request and response models, by resource; ``/openapi.json`` is built from them."""
