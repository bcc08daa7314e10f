"""The built-in job types, one module each; `jobs.registry` names them."""
