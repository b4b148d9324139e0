"""Errors as Nova words them: ``{"<faultName>": {"code": N, "message": ...}}``."""

import json

import webob

FAULT_NAMES = {400: 'badRequest', 401: 'unauthorized', 403: 'forbidden',
               404: 'itemNotFound', 405: 'badMethod', 406: 'notAcceptable',
               409: 'conflictingRequest', 413: 'overLimit', 415: 'badMediaType',
               429: 'overLimit', 501: 'notImplemented', 503: 'serviceUnavailable'}


class Fault(Exception):
    """Raised by handlers; the application turns it into the error response."""

    def __init__(self, code, message, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message):
    return Fault(400, message)


def not_found(message):
    return Fault(404, message)


def conflict(message):
    return Fault(409, message)


def response(code, message, headers=None):
    name = FAULT_NAMES.get(code, 'computeFault')
    resp = webob.Response(status=code, content_type='application/json',
                          charset='utf-8')
    resp.body = json.dumps({name: {'code': code, 'message': message}}).encode()
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp
