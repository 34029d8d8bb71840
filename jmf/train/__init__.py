"""Training engine: state pytree, pure jitted steps, data-parallel placement, the fit loop."""
