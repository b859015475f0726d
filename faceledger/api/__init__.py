"""Wire protocols: Rekognition's AWS JSON 1.1 API with SigV4. Nothing imports this package."""
