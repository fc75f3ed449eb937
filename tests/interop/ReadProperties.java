// java.util.Properties itself reading a .properties file (UTF-8, as Properties.load(Reader)
// takes it), printed as one JSON object on stdout: `java ReadProperties.java FILE`.
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.TreeSet;

public class ReadProperties {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (Reader r = new InputStreamReader(new FileInputStream(args[0]), StandardCharsets.UTF_8)) {
            props.load(r);
        }
        StringBuilder out = new StringBuilder("{");
        for (String key : new TreeSet<>(props.stringPropertyNames())) {
            if (out.length() > 1) out.append(',');
            quote(out, key);
            out.append(':');
            quote(out, props.getProperty(key));
        }
        System.out.println(out.append('}'));
    }

    /** A JSON string, every character outside printable ASCII as a \\u escape (UTF-16 units). */
    static void quote(StringBuilder out, String s) {
        out.append('"');
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c >= 0x20 && c < 0x7f) out.append(c);
            else out.append(String.format("\\u%04x", (int) c));
        }
        out.append('"');
    }
}
