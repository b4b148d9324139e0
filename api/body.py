"""Request bodies: read within a size bound, parsed, and checked against a JSON
schema; every refusal names the field."""

import json

import jsonschema

from api import faults


def read(ctx, req, schema):
    """The request's JSON body once it fits ``schema``; else 400 (or 413) naming
    what is wrong."""
    max_bytes = ctx.conf.api.max_request_body_bytes
    length = req.content_length
    if length is not None and length > max_bytes:
        raise faults.Fault(413, 'Request body of %d bytes is larger than the %d '
                                'allowed.' % (length, max_bytes))
    raw = req.body_file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise faults.Fault(413, 'Request body is larger than the %d bytes '
                                'allowed.' % max_bytes)
    try:
        body = json.loads(raw)
    except ValueError:
        raise faults.bad_request('Malformed request body: not JSON.')
    return validate(body, schema)


def validate(document, schema):
    """``document`` if it fits ``schema``; else 400 naming the first misfit."""
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise faults.bad_request('Invalid input for field/attribute %s. %s' % (
            _field(error), _message(error)))
    return document


def _field(error):
    path = [str(p) for p in error.absolute_path]
    if error.validator == 'additionalProperties':
        known = error.schema.get('properties', {})
        extra = sorted(k for k in error.instance if k not in known)
        if extra:
            path.append(extra[0])
    if error.validator == 'required':
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            path.append(missing[0])
    return '/'.join(path) or 'body'


def _message(error):
    if error.validator == 'additionalProperties':
        return 'Additional properties are not allowed.'
    if error.validator == 'required':
        return 'It is a required property.'
    text = repr(error.instance)
    if len(text) > 120:
        text = text[:120] + '...'
    return 'Value: %s. %s' % (text, error.message[:200])
