"""GET /v1/openapi.json: the task API's OpenAPI 3.1 document.

The document is data (api/openapi-v1.json), written beside the handlers it
describes; tests check its paths against the route table and the handlers'
answers against its schemas.
"""

import json
import os

import api

PATH = os.path.join(os.path.dirname(api.__file__), 'openapi-v1.json')


def load():
    with open(PATH, encoding='utf-8') as f:
        return json.load(f)


def show(ctx, req):
    return 200, load()
