// Stub of the TensorRT native libraries: only the entry points the PyPI TensorRT Python
// bindings (tensorrt_bindings 8.6.1, tensorrt_cu12_bindings 10.3.0) link against, so that
// `import tensorrt` succeeds for introspection (class, method and pybind11 signature names).
// Every function returns null/0: nothing can be built or run with it. Used only by
// tools/dump_tensorrt_api.py; never installed.
extern "C" {
void* createInferBuilder_INTERNAL(void*, int) { return nullptr; }
void* createInferRuntime_INTERNAL(void*, int) { return nullptr; }
void* createInferRefitter_INTERNAL(void*, void*, int) { return nullptr; }
void* createNvOnnxParser_INTERNAL(void*, void*, int) { return nullptr; }
void* createNvOnnxParserRefitter_INTERNAL(void*, void*, int) { return nullptr; }
void* getBuilderPluginRegistry(int) { return nullptr; }
void* getPluginRegistry() { return nullptr; }
int getInferLibVersion() { return 0; }
int getNvOnnxParserVersion() { return 0; }
bool initLibNvInferPlugins(void*, const char*) { return false; }
}

// TensorRT 8.x bindings also link the (deprecated) UFF and Caffe parsers of libnvparsers.
namespace nvuffparser {
enum class FieldType : int {};
class IUffParser;
IUffParser* createUffParser() { return nullptr; }
class FieldMap {
public:
    FieldMap(const char*, const void*, FieldType, int);
};
FieldMap::FieldMap(const char*, const void*, FieldType, int) {}
}  // namespace nvuffparser
namespace nvcaffeparser1 {
class ICaffeParser;
ICaffeParser* createCaffeParser() { return nullptr; }
void shutdownProtobufLibrary() {}
}  // namespace nvcaffeparser1
