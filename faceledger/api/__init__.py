"""Wire protocols: Rekognition's AWS JSON 1.1 API with SigV4, served over HTTP.

Within faceledger only the ``faceledger serve`` command imports this package (when it runs, so
the other commands start without the web stack); the service never does.
"""
