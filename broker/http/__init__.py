"""HTTP pieces shared by the API, webhook sources and destinations and the HTTP
invoker: listening on an address, and the header conventions (expansion,
``Retry-After``).

Imports only the domain model."""
