"""Deployment: the ONNX export and its inference contract, the ONNX Runtime classifier, the HTTP
service and the Streamlit app."""
