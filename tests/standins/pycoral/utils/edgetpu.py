"""TEST DOUBLE for ``pycoral.utils.edgetpu.make_interpreter``: returns the TFLite runtime's CPU
interpreter for the model, so a backend that opens "the Edge TPU" runs real inference."""


def make_interpreter(model_path: str):
    from edge.model.runtime import interpreter_module

    module, _ = interpreter_module()
    return module.Interpreter(model_path=model_path, num_threads=1)
