"""webhook: the mutating admission webhook for GPU pods.

review.py parses AdmissionReview v1 and builds the response; admit.py decides per pod (reading it
with scheduler.translate.pod.read_pod, the extender's own translation); patch.py builds the JSONPatch;
app.py is the FastAPI edge; tls.py reloads the certificate; server.py runs uvicorn; cli.py adds
`gpupack webhook` and `gpupack webhook-config`.
"""
