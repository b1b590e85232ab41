// Apps import one module: the listeners, readiness and environment API comes along.
@_exported public import BatonListen
