"""Training data: frames read by byte offset, observations and their noise, validation, ESP data, Hessian data."""
